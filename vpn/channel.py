"""One TLS connection carrying frames: the socket half of the hot path.

The socket is a non-blocking `ssl.SSLSocket` driven by the event loop's reader/writer callbacks
(no asyncio streams, no per-packet coroutine). Each wake-up drains what the socket holds, walks
the frames in place with memoryviews, and hands all DATA payloads of that batch to the owner in
one call. Writes are coalesced: packets are appended to a buffer and the whole batch goes out in
one `send` per wake-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

from vpn import protocol
from vpn.protocol import HEADER, HEADER_LEN, MsgType, ProtocolError

READ_BUFFER = 1 << 20
RECORD_ROOM = 1 << 15  # keep at least two TLS records of free space before each recv
MAX_QUEUE = 1 << 20  # bytes waiting for one slow peer before its packets are dropped
RECV_BUDGET = 256  # recv calls per wake-up, so one busy peer cannot starve the others


@dataclass
class Counters:
    rx_bytes: int = 0
    rx_packets: int = 0
    tx_bytes: int = 0
    tx_packets: int = 0
    dropped_spoofed: int = 0
    dropped_queue: int = 0
    dropped_invalid: int = 0
    dropped_unroutable: int = 0
    dropped_filtered: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class Channel:
    """Framed, batched I/O on one TLS socket. Subclasses implement the three hooks."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: ssl.SSLSocket) -> None:
        self.loop = loop
        self.sock = sock
        self.fd = sock.fileno()
        self.buf = bytearray(READ_BUFFER)
        self.view = memoryview(self.buf)
        self.start = 0
        self.end = 0
        self.out = bytearray()
        self.pending: memoryview | None = None
        self.closed = False
        self.counters = Counters()
        now = time.monotonic()
        self.last_rx = now
        self.last_tx = now
        self.connected_at = time.time()
        self._writer = False
        self.offset = 0  # bytes of virtio_net_hdr before each packet in DATA frames
        loop.add_reader(self.fd, self.on_readable)

    # -- hooks ---------------------------------------------------------------------------------
    def on_packets(self, packets: list[memoryview]) -> None:
        """The DATA payloads of one batch (views into the read buffer, valid during the call)."""
        raise NotImplementedError

    def on_control(self, kind: int, payload: memoryview) -> None:
        """A non-DATA frame."""
        raise NotImplementedError

    def on_closed(self, reason: str) -> None:
        """The connection is gone (reason for the log); called once."""

    # -- reading -------------------------------------------------------------------------------
    def on_readable(self) -> None:
        sock, view = self.sock, self.view
        received = 0
        for _ in range(RECV_BUDGET):
            if READ_BUFFER - self.end < RECORD_ROOM:
                self._compact()
            try:
                n = sock.recv_into(view[self.end :])
            except ssl.SSLWantReadError:
                break
            except ssl.SSLWantWriteError:
                self._want_writer()
                break
            except (OSError, ssl.SSLError) as exc:
                self.close(_describe_io_error(exc), send_error=False)
                return
            if n == 0:
                self.close("peer closed the connection", send_error=False)
                return
            self.end += n
            received += n
            if self.end - self.start >= HEADER_LEN:
                try:
                    self._walk()
                except ProtocolError as exc:
                    self.close(str(exc))
                    return
                if self.closed:
                    return
        else:
            if sock.pending():
                self.loop.call_soon(self.on_readable)
        if received:
            self.last_rx = time.monotonic()
            self.counters.rx_bytes += received
        self.flush()

    def _walk(self) -> None:
        view, pos, end = self.view, self.start, self.end
        packets: list[memoryview] = []
        unpack = HEADER.unpack_from
        data, shift, mask, limit = (
            protocol.DATA,
            protocol.TYPE_SHIFT,
            protocol.LENGTH_MASK,
            protocol.MAX_DATA,
        )
        while end - pos >= HEADER_LEN:
            word = unpack(view, pos)[0]
            kind, length = word >> shift, word & mask
            if kind == data:
                if length > limit:
                    raise ProtocolError(
                        f"DATA frame of {length} bytes exceeds the limit of {limit}"
                    )
                stop = pos + HEADER_LEN + length
                if stop > end:
                    break
                packets.append(view[pos + HEADER_LEN : stop])
                pos = stop
                continue
            kind, length = protocol.parse_header(word)
            stop = pos + HEADER_LEN + length
            if stop > end:
                break
            if packets:  # keep order: packets before a control frame are delivered first
                self.counters.rx_packets += len(packets)
                self.on_packets(packets)
                packets = []
            self.start = stop
            self.on_control(kind, view[pos + HEADER_LEN : stop])
            if self.closed:
                return
            pos = stop
        self.start = pos
        if packets:
            self.counters.rx_packets += len(packets)
            self.on_packets(packets)
        if self.start == self.end:
            self.start = self.end = 0

    def _compact(self) -> None:
        remaining = self.end - self.start
        if remaining:
            self.view[:remaining] = self.view[self.start : self.end]
        self.start, self.end = 0, remaining

    # -- writing -------------------------------------------------------------------------------
    def queue_packet(self, packet: bytes | memoryview) -> bool:
        """Append one DATA frame; False (and counted) when this peer's queue is full."""
        out = self.out
        if len(out) > MAX_QUEUE:
            self.counters.dropped_queue += 1
            return False
        out += HEADER.pack(protocol.DATA_WORD | len(packet))
        out += packet
        self.counters.tx_packets += 1
        return True

    def send_frame(self, frame: bytes) -> None:
        self.out += frame
        self.flush()

    @property
    def backlog(self) -> int:
        return len(self.out) + (len(self.pending) if self.pending is not None else 0)

    def flush(self) -> None:
        """Send what is queued; returns with the rest pending when the socket is full."""
        if self.closed:
            return
        while True:
            if self.pending is None:
                if not self.out:
                    break
                self.pending = memoryview(self.out)
                self.out = bytearray()
            try:
                sent = self.sock.send(self.pending)
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                self._want_writer()
                return
            except (OSError, ssl.SSLError) as exc:
                self.close(_describe_io_error(exc), send_error=False)
                return
            self.counters.tx_bytes += sent
            self.last_tx = time.monotonic()
            if sent < len(self.pending):
                self.pending = self.pending[sent:]
                continue
            self.pending = None
        if self._writer:
            self.loop.remove_writer(self.fd)
            self._writer = False
            self.on_drained()

    def on_drained(self) -> None:
        """The socket accepted everything queued (the owner may resume reading its TUN)."""

    def _want_writer(self) -> None:
        if not self._writer and not self.closed:
            self.loop.add_writer(self.fd, self._on_writable)
            self._writer = True

    def _on_writable(self) -> None:
        self.flush()
        if not self.closed:
            self.on_readable()  # a read that wanted to write can go on now

    # -- closing -------------------------------------------------------------------------------
    def close(
        self,
        reason: str,
        *,
        send_error: bool = True,
        kind: MsgType = MsgType.ERROR,
        retry: bool = True,
    ) -> None:
        """Tell the peer why (best effort, never blocking) and drop the connection."""
        if self.closed:
            return
        if send_error:
            self.flush()
            if self.closed:
                return
            with contextlib.suppress(OSError, ssl.SSLError, ValueError):
                self.sock.send(protocol.encode_reason(kind, reason, retry=retry))
        self.closed = True
        self.loop.remove_reader(self.fd)
        if self._writer:
            self.loop.remove_writer(self.fd)
            self._writer = False
        with contextlib.suppress(OSError):
            self.sock.close()
        self.pending = None
        self.out = bytearray()
        self.on_closed(reason)


def _describe_io_error(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        from vpn import tls

        return tls.explain(exc)
    if isinstance(exc, ConnectionResetError):
        return "connection reset by peer"
    if isinstance(exc, BrokenPipeError):
        return "connection closed by peer (broken pipe)"
    if isinstance(exc, TimeoutError):
        return "connection timed out"
    return f"{exc.__class__.__name__}: {exc}"


async def wait_fd(loop: asyncio.AbstractEventLoop, fd: int, *, write: bool) -> None:
    future: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not future.done():
            future.set_result(None)

    (loop.add_writer if write else loop.add_reader)(fd, ready)
    try:
        await future
    finally:
        (loop.remove_writer if write else loop.remove_reader)(fd)


async def handshake(loop: asyncio.AbstractEventLoop, sock: ssl.SSLSocket) -> None:
    """A non-blocking TLS handshake; the caller bounds it with asyncio.wait_for."""
    fd = sock.fileno()
    while True:
        try:
            sock.do_handshake()
            return
        except ssl.SSLWantReadError:
            await wait_fd(loop, fd, write=False)
        except ssl.SSLWantWriteError:
            await wait_fd(loop, fd, write=True)


def tune_socket(sock: socket.socket) -> None:
    """Low latency for a tunnel: no Nagle delay on small frames such as keepalives and pings."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


OnClosed = Callable[[str], None]
