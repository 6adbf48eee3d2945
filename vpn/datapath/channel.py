"""One TLS connection carrying frames: the socket half of the hot path.

The socket is a non-blocking `ssl.SSLSocket` driven by the event loop's reader/writer callbacks
(no asyncio streams, no per-packet coroutine). Each wake-up drains what the socket holds and
hands the DATA payloads to the owner as soon as a frame is complete, as memoryviews into the
read buffer: no copy, and a partial frame is looked at again only once enough bytes arrived.

Writes are coalesced into one of two preallocated send buffers: packets are appended (or read
from the TUN straight into the buffer, see `room`/`commit`) and the whole batch goes out in one
`send` per wake-up, while the other buffer holds what the socket has not taken yet. Buffers
are anonymous mappings: an idle session costs the pages it touched, not their full size.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import mmap
import ssl
import sys
import termios
import time
from collections.abc import Callable

from vpn import protocol
from vpn.credentials import tls
from vpn.datapath.counters import BATCHES, Counters
from vpn.errors import ProtocolError
from vpn.protocol import HEADER, HEADER_LEN, MsgType

READ_BUFFER = 1 << 20
RECORD = 1 << 14  # the largest TLS record payload
RECORD_ROOM = 1 << 15  # keep at least two TLS records of free space before each recv
MAX_QUEUE = 1 << 20  # bytes waiting for one slow peer before its packets are dropped
RECV_BUDGET = 256  # recv calls per wake-up, so one busy peer cannot starve the others
FRAME_ROOM = HEADER_LEN + protocol.MAX_DATA  # one DATA frame at most
SEND_BUFFER = MAX_QUEUE + 2 * FRAME_ROOM + protocol.MAX_CONTROL
_DATA_WORD = protocol.DATA_WORD
_pack_into = HEADER.pack_into
_INT = bytes(4)  # an int-sized argument for ioctl


def _buffer(size: int) -> memoryview:
    """Zeroed memory whose pages become resident only once written (unlike bytearray(size))."""
    return memoryview(mmap.mmap(-1, size))


class Channel:
    """Framed, batched I/O on one TLS socket. Subclasses implement the three hooks."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: ssl.SSLSocket) -> None:
        self.loop = loop
        self.sock = sock
        self.fd = sock.fileno()
        # The C object under SSLSocket: one call per TLS record instead of three (recv_into and
        # read are Python wrappers around it). Same errors, except a ragged EOF (see below).
        sslobj = getattr(sock, "_sslobj", None)
        self._read: Callable[[int, memoryview], int] = (
            sslobj.read if sslobj is not None else lambda n, b: sock.recv_into(b, n)
        )
        self._write: Callable[[memoryview], int] = sslobj.write if sslobj is not None else sock.send
        self.view = _buffer(READ_BUFFER)
        self.start = 0  # first byte not yet walked
        self.end = 0  # end of the bytes received
        self.need = HEADER_LEN  # `end` at which the frame at `start` is complete
        self.out = _buffer(SEND_BUFFER)  # being filled: frames[0:out_len]
        self.out_len = 0
        self._spare = _buffer(SEND_BUFFER)  # the other one: `pending` is a view of it, if set
        self.pending: memoryview | None = None  # a batch the socket has not taken completely
        self.closed = False
        self.counters = Counters()
        now = time.monotonic()
        self.last_rx = now
        self.last_tx = now
        self.connected_at = time.time()
        self._writer = False
        self.offset = 0  # bytes of virtio_net_hdr before each packet in DATA frames
        # Set by on_packets to run when a small read wake-up (one record at most: a ping, a
        # request) ends, before the flush: the owner reads what its TUN writes provoked at
        # once, so a reply leaves in the same wake-up. Bulk wake-ups leave that to the loop,
        # which then reads a bigger batch.
        self.after_read: Callable[[], None] | None = None
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
        sock, view, read = self.sock, self.view, self._read
        end, need = self.end, self.need
        received = 0
        for _ in range(RECV_BUDGET):
            if READ_BUFFER - end < RECORD_ROOM:
                self.end = end
                self._compact()
                end, need = self.end, self.need
            try:
                n = read(READ_BUFFER - end, view[end:])
            except ssl.SSLWantReadError:
                break
            except ssl.SSLWantWriteError:
                self._want_writer()
                break
            except ssl.SSLEOFError:
                n = 0  # the TCP connection ended without a TLS goodbye
            except (OSError, ssl.SSLError) as exc:
                self.close(_describe_io_error(exc), send_error=False)
                return
            if n == 0:
                self.close("peer closed the connection", send_error=False)
                return
            end += n
            received += n
            if end >= need:
                self.end = end
                try:
                    self._walk()
                except ProtocolError as exc:
                    self.close(str(exc))
                    return
                if self.closed:
                    return
                end, need = self.end, self.need
            # A short record usually ends the peer's write. Asking the kernel whether more
            # bytes wait costs a fraction of the failed read (an SSLWantReadError) it spares.
            if n < RECORD and not sock.pending() and not _waiting(self.fd):
                break
        else:
            if sock.pending():
                self.loop.call_soon(self.on_readable)
        self.end = end
        if received:
            self.last_rx = time.monotonic()
            self.counters.rx_bytes += received
        if self.after_read is not None:
            after, self.after_read = self.after_read, None
            if received <= RECORD:
                after()
        self.flush()

    def _walk(self) -> None:
        """Hand over every complete frame in [start, end); set `need` for the next one."""
        view, end, walk = self.view, self.end, protocol.walk
        while True:
            packets, control, self.start, need = walk(view, self.start, end)
            if packets:  # in order: packets before a control frame are delivered first
                self.counters.rx_packets += len(packets)
                BATCHES.observe(len(packets))
                self.on_packets(packets)
                if self.closed:
                    return
            if control is None:
                break
            self.on_control(*control)
            if self.closed:
                return
        if self.start == self.end:
            self.start = self.end = 0
            need = HEADER_LEN
        self.need = need

    def _compact(self) -> None:
        """Move the partial frame at `start` to the front of the buffer."""
        remaining = self.end - self.start
        if remaining:
            self.view[:remaining] = self.view[self.start : self.end]
        self.need -= self.start
        self.start, self.end = 0, remaining

    # -- writing -------------------------------------------------------------------------------
    def queue_packet(self, packet: bytes | memoryview) -> bool:
        """Append one DATA frame; False (and counted) when this peer's queue is full."""
        pos = self.out_len
        if pos > MAX_QUEUE:
            self.counters.dropped_queue += 1
            return False
        stop = pos + HEADER_LEN + len(packet)
        _pack_into(self.out, pos, _DATA_WORD | len(packet))
        self.out[pos + HEADER_LEN : stop] = packet
        self.out_len = stop
        self.counters.tx_packets += 1
        return True

    def room(self) -> memoryview | None:
        """Where the next DATA payload can be written in place (up to MAX_DATA bytes, e.g. by
        reading the TUN into it), or None when this peer's queue is full. `commit` keeps it."""
        pos = self.out_len
        if pos > MAX_QUEUE:
            return None
        return self.out[pos + HEADER_LEN : pos + FRAME_ROOM]

    def commit(self, length: int) -> None:
        """The last `room` now holds a payload of `length` bytes: queue it as a DATA frame."""
        pos = self.out_len
        _pack_into(self.out, pos, _DATA_WORD | length)
        self.out_len = pos + HEADER_LEN + length
        self.counters.tx_packets += 1

    def send_frame(self, frame: bytes) -> None:
        pos, stop = self.out_len, self.out_len + len(frame)
        if stop > len(self.out):  # only control frames queued behind a full queue get here
            bigger = _buffer(max(2 * len(self.out), stop))
            bigger[:pos] = self.out[:pos]
            self.out = bigger
        self.out[pos:stop] = frame
        self.out_len = stop
        self.flush()

    @property
    def backlog(self) -> int:
        return self.out_len + (len(self.pending) if self.pending is not None else 0)

    def flush(self) -> None:
        """Send what is queued; returns with the rest pending when the socket is full."""
        if self.closed:
            return
        while True:
            if self.pending is None:
                if not self.out_len:
                    break
                # The filled buffer becomes the pending batch; the spare one is filled next.
                self.pending = self.out[: self.out_len]
                self.out, self._spare = self._spare, self.out
                self.out_len = 0
            try:
                sent = self._write(self.pending)
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
        self.out_len = 0
        self.on_closed(reason)


def _waiting(fd: int) -> int:
    """Bytes in the socket's receive queue (FIONREAD); nonzero (go on reading) if unknown."""
    try:
        return int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, _INT), sys.byteorder)
    except OSError:
        return 1


def _describe_io_error(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return tls.explain(exc)
    if isinstance(exc, ConnectionResetError):
        return "connection reset by peer"
    if isinstance(exc, BrokenPipeError):
        return "connection closed by peer (broken pipe)"
    if isinstance(exc, TimeoutError):
        return "connection timed out"
    return f"{exc.__class__.__name__}: {exc}"
