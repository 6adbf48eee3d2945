"""The batched TLS channel on a real TLS 1.3 connection: every byte arrives, in order, whatever
the frame sizes, batch sizes and backpressure; protocol violations close the channel."""

from __future__ import annotations

import asyncio
import random
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from vpn import protocol
from vpn.credentials import pki
from vpn.credentials.tls import client_context, server_context
from vpn.datapath import channel
from vpn.datapath.channel import Channel
from vpn.datapath.counters import Counters
from vpn.datapath.handshake import handshake
from vpn.protocol import MsgType


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return pki.lab_pki(tmp_path_factory.mktemp("pki"), clients=("client1",))


class Collector(Channel):
    """Keeps what arrives; the test inspects it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: ssl.SSLSocket) -> None:
        super().__init__(loop, sock)
        self.packets: list[bytes] = []
        self.controls: list[tuple[int, bytes]] = []
        self.reason = ""

    def on_packets(self, packets: list[memoryview]) -> None:
        self.packets.extend(bytes(p) for p in packets)

    def on_control(self, kind: int, payload: memoryview) -> None:
        self.controls.append((kind, bytes(payload)))

    def on_closed(self, reason: str) -> None:
        self.reason = reason


async def pair(lab: dict[str, Path]) -> tuple[Collector, Collector]:
    """(sender, receiver) over a socketpair with TLS 1.3 and the lab's certificates."""
    loop = asyncio.get_running_loop()
    a, b = socket.socketpair()
    for s in (a, b):
        s.setblocking(False)
    server = server_context(lab["server"], lab["server.key"], lab["ca"]).wrap_socket(
        a, server_side=True, do_handshake_on_connect=False
    )
    client = client_context(lab["client1"], lab["client1.key"], lab["ca"]).wrap_socket(
        b, server_hostname="gateway", do_handshake_on_connect=False
    )
    await asyncio.wait_for(asyncio.gather(handshake(loop, server), handshake(loop, client)), 5)
    return Collector(loop, client), Collector(loop, server)


async def until(what: str, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def run(lab: dict[str, Path], test: Callable[[Collector, Collector], Awaitable[None]]) -> None:
    async def main() -> None:
        sender, receiver = await pair(lab)
        try:
            await test(sender, receiver)
        finally:
            for side in (sender, receiver):
                side.close("test over", send_error=False)

    asyncio.run(main())


def test_frames_of_every_size_arrive_intact_and_in_order(lab: dict[str, Path]) -> None:
    rng = random.Random(7)
    sizes = [1, 20, 1500, 16380, 16384, 16390, protocol.MAX_DATA, 65545, 3, 40000]
    sizes += [
        rng.choice((rng.randint(1, 200), rng.randint(1, protocol.MAX_DATA))) for _ in range(300)
    ]
    payloads = [rng.randbytes(n) for n in sizes]  # ~5 MB: the 1 MiB read buffer wraps many times

    async def test(sender: Collector, receiver: Collector) -> None:
        for i, payload in enumerate(payloads):
            if i % 2:
                assert sender.queue_packet(payload)
            else:  # written in place, as the TUN readers do
                room = sender.room()
                assert room is not None and len(room) >= len(payload)
                room[: len(payload)] = payload
                sender.commit(len(payload))
            if i % 7 == 0:
                sender.send_frame(protocol.KEEPALIVE_FRAME)  # flushes the batch so far
            if sender.backlog > channel.MAX_QUEUE // 2:
                await until("the queue to drain", lambda: sender.backlog == 0)
        sender.flush()
        await until("every packet", lambda: len(receiver.packets) >= len(payloads))
        assert receiver.packets == payloads
        assert [k for k, _ in receiver.controls] == [MsgType.KEEPALIVE] * len(
            range(0, len(payloads), 7)
        )
        assert receiver.counters.rx_packets == len(payloads)
        assert not receiver.closed and not sender.closed

    run(lab, test)


def test_a_full_queue_drops_new_packets_and_keeps_the_queued_ones(lab: dict[str, Path]) -> None:
    chunk = bytes(range(256)) * 200  # 51 200 bytes

    async def test(sender: Collector, receiver: Collector) -> None:
        receiver.loop.remove_reader(receiver.fd)  # the peer stops reading
        accepted = 0
        for _ in range(400):  # ~20 MB offered: far more than the socket buffers and the queue
            if sender.queue_packet(chunk):
                accepted += 1
            sender.flush()
        assert sender.counters.dropped_queue > 0
        assert sender.room() is None  # in-place writers see the same limit
        assert sender.backlog <= 2 * (channel.MAX_QUEUE + channel.FRAME_ROOM)  # queued + pending
        receiver.loop.add_reader(receiver.fd, receiver.on_readable)
        await until("the accepted packets", lambda: len(receiver.packets) >= accepted)
        assert len(receiver.packets) == accepted
        assert all(p == chunk for p in receiver.packets)
        await until("the queue to drain", lambda: sender.backlog == 0)
        assert sender.queue_packet(chunk)  # room again

    run(lab, test)


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (struct.pack("!I", 99 << 24 | 3) + b"abc", "unknown frame type 99"),
        (struct.pack("!I", MsgType.DATA << 24 | (protocol.MAX_DATA + 1)), "exceeds the limit"),
        (struct.pack("!I", MsgType.HELLO << 24 | 9000), "exceeds the limit"),
    ],
)
def test_a_bad_header_closes_the_channel_before_its_payload(
    lab: dict[str, Path], header: bytes, reason: str
) -> None:
    async def test(sender: Collector, receiver: Collector) -> None:
        sender.queue_packet(b"\x45" + bytes(39))
        sender.send_frame(header)  # no payload follows: refused on the header alone
        await until("the receiver to close", lambda: receiver.closed)
        assert reason in receiver.reason
        await until("the sender to hear why", lambda: sender.closed)
        assert sender.controls and sender.controls[0][0] == MsgType.ERROR
        assert reason in sender.controls[0][1].decode()

    run(lab, test)


def test_a_peer_that_hangs_up_closes_the_channel(lab: dict[str, Path]) -> None:
    async def test(sender: Collector, receiver: Collector) -> None:
        sender.close("bye", send_error=False)
        await until("the receiver to notice", lambda: receiver.closed)
        assert "closed" in receiver.reason or "EOF" in receiver.reason

    run(lab, test)


def test_counters_add_up_without_sharing_state() -> None:
    a = Counters(rx_packets=2, dropped_spoofed=1)
    b = Counters(rx_packets=3, tx_bytes=10)
    total = a.plus(b)
    assert (total.rx_packets, total.tx_bytes, total.dropped_spoofed) == (5, 10, 1)
    assert a.rx_packets == 2  # plus() leaves its operands alone
    a.add(b)
    assert a.as_dict() == total.as_dict()
