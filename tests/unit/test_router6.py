"""The router with IPv6, through the real code on a socketpair standing in for the TUN: IPv6
anti-spoofing on plain packets and GSO super-packets (virtio_net_hdr), IPv6 client subnets,
routing of IPv6 destinations to sessions, and the IPv6 rules of the vnet header check."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import struct
from collections.abc import Iterator

import pytest

from vpn.datapath.counters import Counters
from vpn.datapath.router import Router
from vpn.datapath.sessions import Session, SessionTable
from vpn.iface.tun import Tun
from vpn.iface.vnet import (
    PLAIN_VNET_HDR,
    VNET_HDR_F_NEEDS_CSUM,
    VNET_HDR_GSO_ECN,
    VNET_HDR_GSO_TCPV4,
    VNET_HDR_GSO_TCPV6,
    VNET_HDR_GSO_UDP_L4,
    VNET_HDR_LEN,
    VnetHdr,
    client_vnet_problem,
    pack_vnet_hdr,
)
from vpn.packets import icmp_echo, ipv6, udp6

OWN4, OWN6 = "10.203.0.10", "fd00:53::10"
OTHER6 = "fd00:53::11"
LAN6 = "fd00:202::2"
SITE6 = "fd00:250::/64"


class Bench:
    def __init__(self, offset: int = 0) -> None:
        self.loop = asyncio.new_event_loop()
        self.lan, tun_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        tun_end.setblocking(False)
        self.lan.setblocking(False)
        self.socks: list[socket.socket] = [self.lan, tun_end]
        self.table = SessionTable()
        tun = Tun(fd=tun_end.fileno(), name="tun-test", vnet_hdr=bool(offset))
        self.router = Router(tun, offset, self.table, Counters(), client_to_client=False)

    def session(self, identity: str, own4: str, own6: str | None, *subnets: str) -> Session:
        a, b = socket.socketpair()
        a.setblocking(False)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        sock = context.wrap_socket(a, do_handshake_on_connect=False)
        self.socks += [a, b, sock]

        async def on_hello(session: Session, hello: object) -> None:
            return None

        session = Session(
            self.loop, sock, identity, "test", forwarder=self.router, offset=self.router.offset,
            handshake_timeout=60, on_hello=on_hello, on_gone=lambda s, r: None,
        )  # fmt: skip
        session.phase = "data"
        session.address = ipaddress.IPv4Address(own4)
        session.address_packed = session.address.packed
        if own6 is not None:
            session.address6 = ipaddress.IPv6Address(own6)
            session.address6_packed = session.address6.packed
        session.subnets = tuple(ipaddress.ip_network(s) for s in subnets)
        session.subnet_masks = tuple(
            (int(n.network_address), int(n.netmask)) for n in session.subnets if n.version == 4
        )
        session.subnet6_masks = tuple(
            (int(n.network_address), int(n.netmask)) for n in session.subnets if n.version == 6
        )
        self.table.add(session, session.address)
        return session

    def written(self) -> list[bytes]:
        out = []
        while True:
            try:
                out.append(self.lan.recv(1 << 17))
            except BlockingIOError:
                return out

    def close(self) -> None:
        for s in self.socks:
            s.close()
        self.loop.close()


@pytest.fixture
def bench() -> Iterator[Bench]:
    b = Bench()
    yield b
    b.close()


@pytest.fixture
def vnet_bench() -> Iterator[Bench]:
    b = Bench(VNET_HDR_LEN)
    yield b
    b.close()


def tcp6(source: str, destination: str, size: int) -> bytes:
    """An IPv6 TCP segment (a bare 20-byte TCP header, data offset 5) of `size` data bytes."""
    tcp = struct.pack("!HHIIBBHHH", 1, 2, 0, 0, 5 << 4, 0x10, 65535, 0, 0) + bytes(size)
    return ipv6(source, destination, 6, tcp)


def gso6(packet: bytes) -> bytes:
    """The virtio_net_hdr a Linux TUN puts before a TCPV6 super-packet, then the packet."""
    hdr = VnetHdr(VNET_HDR_F_NEEDS_CSUM, VNET_HDR_GSO_TCPV6, 60, 1440, 40, 16)
    return pack_vnet_hdr(hdr) + packet


def test_ipv6_sources_are_checked_per_packet_and_counted(bench: Bench) -> None:
    a = bench.session("alice", OWN4, OWN6)
    good = udp6(OWN6, LAN6, 1, 2, b"x")
    spoofed = [udp6(s, LAN6, 1, 2, b"x") for s in (OTHER6, "fd00:99::1", "fe80::1", "::")]
    bench.router.from_session(a, [memoryview(p) for p in (spoofed[0], good, *spoofed[1:])])
    assert bench.written() == [good]
    assert a.counters.dropped_spoofed == 4 and a.counters.dropped_invalid == 0


def test_ipv4_rules_are_unchanged_next_to_ipv6(bench: Bench) -> None:
    a = bench.session("alice", OWN4, OWN6)
    good4 = icmp_echo(OWN4, "10.202.0.2")
    # An IPv4 packet with the IPv6 address's first bytes as its source is still spoofed.
    bench.router.from_session(a, [memoryview(good4), memoryview(icmp_echo("10.203.0.99", OWN4))])
    assert bench.written() == [good4] and a.counters.dropped_spoofed == 1


def test_a_session_without_ipv6_drops_ipv6_as_invalid(bench: Bench) -> None:
    a = bench.session("alice", OWN4, None)
    bench.router.from_session(a, [memoryview(udp6(OWN6, LAN6, 1, 2, b"x"))])
    assert bench.written() == [] and a.counters.dropped_invalid == 1
    assert a.counters.dropped_spoofed == 0


def test_a_short_ipv6_header_is_invalid(bench: Bench) -> None:
    a = bench.session("alice", OWN4, OWN6)
    bench.router.from_session(a, [memoryview(udp6(OWN6, LAN6, 1, 2, b"x")[:39])])
    assert bench.written() == [] and a.counters.dropped_invalid == 1


def test_ipv6_client_subnet_may_be_sourced_and_is_routed_to_its_session(bench: Bench) -> None:
    site = bench.session("site", OWN4, OWN6, SITE6)
    other = bench.session("other", "10.203.0.11", OTHER6)
    from_site = udp6("fd00:250::7", LAN6, 1, 2, b"x")
    bench.router.from_session(site, [memoryview(from_site)])
    assert bench.written() == [from_site] and site.counters.dropped_spoofed == 0
    bench.router.from_session(other, [memoryview(udp6("fd00:250::7", LAN6, 1, 2, b"x"))])
    assert bench.written() == [] and other.counters.dropped_spoofed == 1
    # Client to client is off: another client's IPv6 address or subnet is filtered.
    bench.router.from_session(other, [memoryview(udp6(OTHER6, "fd00:250::7", 1, 2, b"x"))])
    bench.router.from_session(other, [memoryview(udp6(OTHER6, OWN6, 1, 2, b"x"))])
    assert bench.written() == [] and other.counters.dropped_filtered == 2


def test_ipv6_destinations_from_the_device_go_to_their_session(bench: Bench) -> None:
    site = bench.session("site", OWN4, OWN6, SITE6)
    other = bench.session("other", "10.203.0.11", OTHER6)
    routes = bench.table.routes
    assert routes.owner(ipaddress.IPv6Address(OWN6).packed) is site
    assert routes.owner(ipaddress.IPv6Address("fd00:250::1").packed) is site
    assert routes.owner(ipaddress.IPv6Address(OTHER6).packed) is other
    for destination in (OWN6, "fd00:250::1", OTHER6, "fd00:99::1"):
        bench.lan.send(udp6(LAN6, destination, 1, 2, b"x"))
    bench.router.from_device()
    assert site.counters.tx_packets == 2 and other.counters.tx_packets == 1
    assert bench.router.counters.dropped_unroutable == 1
    bench.table.remove(site)
    assert routes.owner(ipaddress.IPv6Address(OWN6).packed) is None


def test_gso_super_packets_are_checked_for_their_ipv6_source(vnet_bench: Bench) -> None:
    a = vnet_bench.session("alice", OWN4, OWN6)
    good = gso6(tcp6(OWN6, LAN6, 8000))
    spoofed = gso6(tcp6(OTHER6, LAN6, 8000))
    plain_spoofed = PLAIN_VNET_HDR + udp6("fd00:99::1", LAN6, 1, 2, b"x")
    vnet_bench.router.from_session(a, [memoryview(spoofed), memoryview(good)])
    vnet_bench.router.from_session(a, [memoryview(plain_spoofed)])
    assert vnet_bench.written() == [good]
    assert a.counters.dropped_spoofed == 2 and a.counters.dropped_bad_vnet == 0


def test_bad_vnet_header_on_an_ipv6_packet_is_dropped(vnet_bench: Bench) -> None:
    a = vnet_bench.session("alice", OWN4, OWN6)
    packet = tcp6(OWN6, LAN6, 3000)
    as_v4 = pack_vnet_hdr(VnetHdr(VNET_HDR_F_NEEDS_CSUM, VNET_HDR_GSO_TCPV4, 60, 1440, 40, 16))
    vnet_bench.router.from_session(a, [memoryview(as_v4 + packet)])
    assert vnet_bench.written() == [] and a.counters.dropped_bad_vnet == 1


TCP6 = tcp6(OWN6, LAN6, 3000)
UDP6 = udp6(OWN6, LAN6, 1, 2, bytes(3000))


@pytest.mark.parametrize(
    ("hdr", "packet", "reason"),
    [
        ((1, VNET_HDR_GSO_TCPV6, 60, 1440, 40, 16), TCP6, None),
        ((1, VNET_HDR_GSO_TCPV6 | VNET_HDR_GSO_ECN, 60, 1440, 40, 16), TCP6, None),
        ((1, VNET_HDR_GSO_UDP_L4, 48, 1440, 40, 6), UDP6, None),
        ((1, 0, 0, 0, 40, 6), UDP6, None),
        ((1, VNET_HDR_GSO_TCPV4, 60, 1440, 40, 16), TCP6, "not allowed for an IPv6 packet"),
        ((1, VNET_HDR_GSO_UDP_L4, 60, 1440, 40, 16), TCP6, "does not match IPv6 protocol"),
        ((1, VNET_HDR_GSO_TCPV6, 60, 1440, 20, 16), TCP6, "csum_start 20"),
        ((1, 0, 0, 0, 40, 16), UDP6, "csum_offset 16 is wrong for IPv6 protocol 17"),
        ((0, VNET_HDR_GSO_TCPV6, 60, 0, 0, 0), TCP6, "gso_size 0"),
    ],
)
def test_vnet_header_rules_for_ipv6(
    hdr: tuple[int, ...], packet: bytes, reason: str | None
) -> None:
    problem = client_vnet_problem(VnetHdr(*hdr), packet[0], packet[6], len(packet))
    if reason is None:
        assert problem is None
    else:
        assert problem is not None and reason in problem, problem
