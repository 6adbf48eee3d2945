"""The data path's own defences, driven through the real code: the layer-2 switch against MAC
spoofing, the router's client-to-client filter for client subnets, the virtio_net_hdr check,
the PKI directory's mode and the scrypt parameters of the password file."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterator

import pytest

from vpn.datapath.sessions import Session, SessionTable
from vpn.datapath.switch import Switch
from vpn.iface.tun import Tun

MAC_A = bytes.fromhex("02aa00000001")
MAC_B = bytes.fromhex("02bb00000002")
MAC_LAN = bytes.fromhex("02cc00000003")
BROADCAST = b"\xff" * 6


def arp_frame(source: bytes, sender_ip: bytes, destination: bytes = BROADCAST) -> bytes:
    """An ARP request from `source` claiming `sender_ip`."""
    arp = b"\x00\x01\x08\x00\x06\x04\x00\x01" + source + sender_ip + bytes(6) + bytes(4)
    return destination + source + b"\x08\x06" + arp


class Bench:
    """A Switch on a datagram socketpair standing in for the TAP: each write is one frame."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.lan_end, tap_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        tap_end.setblocking(False)
        self.lan_end.setblocking(False)
        self._tap_sock = tap_end
        self.table = SessionTable()
        self.switch = Switch(Tun(fd=tap_end.fileno(), name="tap-test", tap=True), self.table)
        self._socks: list[socket.socket] = []

    def session(self, identity: str, address: bytes) -> Session:
        a, b = socket.socketpair()
        self._socks += [a, b]
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        sock = context.wrap_socket(a, do_handshake_on_connect=False)
        self._socks.append(sock)

        async def on_hello(session: Session, hello: object) -> None:
            return None

        session = Session(
            self.loop, sock, identity, "test", forwarder=self.switch, offset=0,
            handshake_timeout=60, on_hello=on_hello, on_gone=lambda s, r: None,
        )  # fmt: skip
        session.phase = "data"
        session.address_packed = address
        return session

    def from_lan(self, frame: bytes) -> None:
        """A frame arriving on the TAP from the LAN side, read by the switch's own loop."""
        self.lan_end.send(frame)
        self.switch.from_device()

    def to_lan(self) -> list[bytes]:
        out = []
        while True:
            try:
                out.append(self.lan_end.recv(65536))
            except BlockingIOError:
                return out

    def close(self) -> None:
        for s in (*self._socks, self.lan_end, self._tap_sock):
            s.close()
        self.loop.close()


@pytest.fixture
def bench() -> Iterator[Bench]:
    b = Bench()
    try:
        yield b
    finally:
        b.close()


def test_session_cannot_take_another_sessions_mac(bench: Bench) -> None:
    a = bench.session("alice", b"\x0a\x00\x00\x0a")
    b = bench.session("bob", b"\x0a\x00\x00\x0b")
    bench.switch.from_session(a, [memoryview(arp_frame(MAC_A, a.address_packed))])
    assert bench.switch.table[MAC_A] is a
    bench.switch.from_session(b, [memoryview(arp_frame(MAC_A, b.address_packed))])
    assert b.counters.dropped_spoofed == 1
    assert bench.switch.table[MAC_A] is a, "A's entry must not move to B"
    assert b.mac is None
    assert len(bench.to_lan()) == 1, "only A's frame reaches the LAN"
    # B may still use a MAC of its own, and then only that one
    bench.switch.from_session(b, [memoryview(arp_frame(MAC_B, b.address_packed))])
    bench.switch.from_session(b, [memoryview(arp_frame(MAC_A, b.address_packed))])
    assert b.mac == MAC_B and bench.switch.table[MAC_A] is a
    assert b.counters.dropped_spoofed == 2
    assert len(bench.to_lan()) == 1


def test_session_cannot_take_a_lan_hosts_mac(bench: Bench) -> None:
    bench.from_lan(arp_frame(MAC_LAN, b"\x0a\x00\x00\x02"))
    attacker = bench.session("mallory", b"\x0a\x00\x00\x0c")
    bench.switch.from_session(attacker, [memoryview(arp_frame(MAC_LAN, attacker.address_packed))])
    assert attacker.counters.dropped_spoofed == 1
    assert MAC_LAN not in bench.switch.table
    assert bench.to_lan() == []


def test_reconnect_of_the_same_identity_keeps_its_mac(bench: Bench) -> None:
    old = bench.session("alice", b"\x0a\x00\x00\x0a")
    new = bench.session("alice", b"\x0a\x00\x00\x0a")
    bench.switch.from_session(old, [memoryview(arp_frame(MAC_A, old.address_packed))])
    bench.switch.from_session(new, [memoryview(arp_frame(MAC_A, new.address_packed))])
    assert bench.switch.table[MAC_A] is new and new.counters.dropped_spoofed == 0
    bench.switch.forget(old)
    assert bench.switch.table[MAC_A] is new
