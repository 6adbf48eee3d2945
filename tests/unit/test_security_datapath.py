"""The data path's own defences, driven through the real code: the layer-2 switch against MAC
spoofing, the router's client-to-client filter for client subnets, the virtio_net_hdr check,
the PKI directory's mode and the scrypt parameters of the password file."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import os
import socket
import ssl
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vpn import log
from vpn.credentials import passwords
from vpn.credentials.ca import init_ca
from vpn.credentials.lab import lab_pki
from vpn.credentials.passwords import PasswordFile, verify_password
from vpn.datapath.counters import Counters
from vpn.datapath.router import Router
from vpn.datapath.sessions import Session, SessionTable
from vpn.datapath.switch import Switch
from vpn.errors import AuthError
from vpn.iface.tun import Tun
from vpn.iface.vnet import (
    PLAIN_VNET_HDR,
    VNET_HDR_F_DATA_VALID,
    VNET_HDR_F_NEEDS_CSUM,
    VNET_HDR_GSO_ECN,
    VNET_HDR_GSO_NONE,
    VNET_HDR_GSO_TCPV4,
    VNET_HDR_GSO_TCPV6,
    VNET_HDR_GSO_UDP,
    VNET_HDR_GSO_UDP_L4,
    VNET_HDR_LEN,
    VnetHdr,
    client_vnet_problem,
    pack_vnet_hdr,
)
from vpn.packets import ipv4, udp
from vpn.pool import RouteTable

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
        a.setblocking(False)  # never handshaken: a flush must not wait for the peer
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


def ipv6_frame(source: bytes, sender6: str, destination: bytes = BROADCAST) -> bytes:
    """An IPv6 packet (no payload) from MAC `source` and IPv6 address `sender6`."""
    header = b"\x60\x00\x00\x00\x00\x00\x3b\xff"  # version 6, no next header, hop limit
    header += ipaddress.IPv6Address(sender6).packed + ipaddress.IPv6Address("ff02::1").packed
    return destination + source + b"\x86\xdd" + header


def test_tap_carries_ipv6_from_the_link_own_addresses_only(bench: Bench) -> None:
    """Layer-2 mode leases no IPv6 address: a client's link-local and unspecified sources
    cross as they are (neighbour discovery, DAD), any other IPv6 source is spoofed."""
    a = bench.session("alice", b"\x0a\x00\x00\x0a")
    good = [ipv6_frame(MAC_A, "fe80::aa:1"), ipv6_frame(MAC_A, "::"), ipv6_frame(MAC_A, "febf::1")]
    bench.switch.from_session(a, [memoryview(f) for f in good])
    assert bench.to_lan() == good and a.counters.dropped_spoofed == 0
    forged = [ipv6_frame(MAC_A, address) for address in ("fd00:60::5", "fec0::1", "ff02::1")]
    bench.switch.from_session(a, [memoryview(f) for f in forged])
    assert bench.to_lan() == [] and a.counters.dropped_spoofed == 3
    bench.switch.from_session(a, [memoryview(ipv6_frame(MAC_B, "fe80::bb:1"))])
    assert bench.to_lan() == [] and a.counters.dropped_spoofed == 4, "another MAC: still spoofed"
    short = ipv6_frame(MAC_A, "fe80::aa:1")[:-1]  # one byte short of an IPv6 header
    bench.switch.from_session(a, [memoryview(short)])
    assert bench.to_lan() == [] and a.counters.dropped_filtered == 1


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


# -- layer 3: client-to-client through client subnets ------------------------------------------


def tun_bench(bench: Bench, *, client_to_client: bool, offset: int = 0) -> Router:
    """A Router on the bench's datagram socketpair standing in for the TUN."""
    tun = Tun(fd=bench._tap_sock.fileno(), name="tun-test", vnet_hdr=bool(offset))
    return Router(tun, offset, bench.table, Counters(), client_to_client=client_to_client)


def logged_in(bench: Bench, router: Router, identity: str, address: str, *subnets: str) -> Session:
    session = bench.session(identity, ipaddress.IPv4Address(address).packed)
    session.forwarder = router
    session.offset = router.offset
    session.address = ipaddress.IPv4Address(address)
    session.subnets = tuple(ipaddress.IPv4Network(s) for s in subnets)
    session.subnet_masks = tuple((int(n.network_address), int(n.netmask)) for n in session.subnets)
    bench.table.add(session, session.address)
    return session


@pytest.mark.parametrize("client_to_client", [False, True])
def test_a_client_subnet_is_client_to_client_traffic(bench: Bench, client_to_client: bool) -> None:
    router = tun_bench(bench, client_to_client=client_to_client)
    a = logged_in(bench, router, "alice", "10.203.0.10")
    b = logged_in(bench, router, "bob", "10.203.0.11", "10.210.0.0/24")
    router.from_session(a, [memoryview(udp("10.203.0.10", "10.210.0.5", 1, 2, b"x"))])
    assert bench.to_lan() == [], "never through the TUN (the kernel would route it to B)"
    if client_to_client:
        assert b.counters.tx_packets == 1 and a.counters.dropped_filtered == 0
    else:
        assert a.counters.dropped_filtered == 1 and b.counters.tx_packets == 0
    # the LAN is not another client: it goes into the TUN either way
    router.from_session(a, [memoryview(udp("10.203.0.10", "10.202.0.2", 1, 2, b"x"))])
    assert len(bench.to_lan()) == 1


def test_route_owner_memo_follows_the_table() -> None:
    routes: RouteTable[str] = RouteTable()
    routes.add_subnet(ipaddress.IPv4Network("10.210.0.0/24"), "bob")
    dest = ipaddress.IPv4Address("10.210.0.5").packed
    assert routes.owner(dest) == "bob"
    routes.remove_target("bob")
    assert routes.owner(dest) is None
    routes.add_subnet(ipaddress.IPv4Network("10.210.0.0/16"), "carol")
    assert routes.owner(dest) == "carol"


# -- virtio_net_hdr from a client ------------------------------------------------------------


def offload_packet(hdr: tuple[int, int, int, int, int, int], packet: bytes) -> bytes:
    return pack_vnet_hdr(VnetHdr(*hdr)) + packet


def test_bad_vnet_header_is_dropped_and_counted_good_one_written(bench: Bench) -> None:
    router = tun_bench(bench, client_to_client=False, offset=VNET_HDR_LEN)
    a = logged_in(bench, router, "alice", "10.203.0.10")
    good = udp("10.203.0.10", "10.202.0.2", 1, 2, b"hello")
    bad = offload_packet((VNET_HDR_F_NEEDS_CSUM, 0, 0, 0, 20, 400), good)  # beyond the packet
    partial = offload_packet((VNET_HDR_F_NEEDS_CSUM, 0, 28, 0, 20, 6), good)
    router.from_session(
        a, [memoryview(bad), memoryview(PLAIN_VNET_HDR + good), memoryview(partial)]
    )
    assert a.counters.dropped_bad_vnet == 1
    written = bench.to_lan()
    assert written == [PLAIN_VNET_HDR + good, partial]


TCP_PACKET = ipv4("10.203.0.10", "10.202.0.2", 6, bytes(20) + bytes(3000))
UDP_PACKET = udp("10.203.0.10", "10.202.0.2", 1, 2, bytes(3000))


@settings(max_examples=400, deadline=None)
@given(
    flags=st.sampled_from([0, 1, 2, 3, 4, 0x80]),
    gso_type=st.sampled_from([0, 1, 3, 4, 5, 6, 0x81, 0x85, 0x80]),
    hdr_len=st.integers(0, 0xFFFF),
    gso_size=st.sampled_from([0, 1, 1448, 0xFFFF]) | st.integers(0, 0xFFFF),
    csum_start=st.sampled_from([0, 20, 24]) | st.integers(0, 0xFFFF),
    csum_offset=st.sampled_from([0, 6, 16]) | st.integers(0, 0xFFFF),
    packet=st.sampled_from([TCP_PACKET, UDP_PACKET, TCP_PACKET[:40], UDP_PACKET[:28]]),
)
def test_every_accepted_vnet_header_is_one_the_kernel_can_act_on(
    flags: int, gso_type: int, hdr_len: int, gso_size: int, csum_start: int, csum_offset: int,
    packet: bytes,
) -> None:  # fmt: skip
    hdr = VnetHdr(flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)
    protocol = packet[9]
    problem = client_vnet_problem(hdr, packet[0], protocol, len(packet))
    if problem is not None:
        assert problem.startswith("virtio_net_hdr ")
        return
    assert flags & ~(VNET_HDR_F_NEEDS_CSUM | VNET_HDR_F_DATA_VALID) == 0
    assert hdr_len <= len(packet)
    base = gso_type & ~VNET_HDR_GSO_ECN
    assert base in (VNET_HDR_GSO_NONE, VNET_HDR_GSO_TCPV4, VNET_HDR_GSO_UDP_L4)
    if base == VNET_HDR_GSO_NONE:
        assert gso_type == 0 and gso_size == 0
    else:
        assert 0 < gso_size < 0xFFFF and hdr_len < len(packet)
        assert protocol == (6 if base == VNET_HDR_GSO_TCPV4 else 17)
    if flags & VNET_HDR_F_NEEDS_CSUM:
        assert csum_start == 20 and csum_offset == (16 if protocol == 6 else 6)
        assert csum_start + csum_offset + 2 <= len(packet)


@pytest.mark.parametrize(
    ("hdr", "reason"),
    [
        ((4, 0, 0, 0, 0, 0), "flags 0x04"),
        ((0, VNET_HDR_GSO_UDP, 0, 1400, 0, 0), "UFO"),
        ((0, VNET_HDR_GSO_TCPV6, 0, 1400, 0, 0), "TCPV6"),
        ((0, 0, 0, 1400, 0, 0), "gso_size 1400 without a GSO type"),
        ((0, VNET_HDR_GSO_TCPV4, 40, 0, 0, 0), "gso_size 0"),
        ((0, VNET_HDR_GSO_UDP_L4, 28, 1400, 0, 0), "does not match"),
        ((0, VNET_HDR_GSO_TCPV4, 4000, 1400, 0, 0), "hdr_len 4000"),
        ((1, 0, 0, 0, 20, 6), "csum_offset 6"),
        ((1, 0, 0, 0, 14, 16), "csum_start 14"),
        ((0, VNET_HDR_GSO_ECN, 0, 0, 0, 0), "ECN bit without"),
    ],
)
def test_rejected_vnet_headers_say_why(hdr: tuple[int, ...], reason: str) -> None:
    problem = client_vnet_problem(VnetHdr(*hdr), TCP_PACKET[0], 6, len(TCP_PACKET))
    assert problem is not None and reason in problem, problem


# -- the PKI directory's mode ------------------------------------------------------------------


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_pki_directories_are_created_0700_whatever_the_umask(
    tmp_path: Path, umask_022: None
) -> None:
    init_ca(tmp_path / "ca" / "dir")
    assert stat.S_IMODE((tmp_path / "ca" / "dir").stat().st_mode) == 0o700
    lab_pki(tmp_path / "lab", clients=("client1",))
    assert stat.S_IMODE((tmp_path / "lab").stat().st_mode) == 0o700


def test_an_open_existing_pki_directory_is_warned_about(
    tmp_path: Path, umask_022: None, capsys: pytest.CaptureFixture[str]
) -> None:
    log.setup("info")
    open_dir = tmp_path / "shared"
    open_dir.mkdir(mode=0o755)
    init_ca(open_dir)
    err = capsys.readouterr().err
    assert "pki_directory_open" in err and f"chmod 700 {open_dir}" in err
    assert stat.S_IMODE(open_dir.stat().st_mode) == 0o755, "an existing directory is left as is"


# -- scrypt parameters -------------------------------------------------------------------------


def old_hash(password: str, n: int = 2**14) -> str:
    salt = b"0123456789abcdef"
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=8, p=1, dklen=32)
    return f"scrypt${n}$8$1${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def test_old_hash_verifies_and_is_upgraded_others_untouched(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    bob = f"bob:{old_hash('bobs secret')}"
    path.write_text(f"# users\n{bob}\nalice:{old_hash('correct horse')}\n\ncarol:{old_hash('c')}\n")
    users = PasswordFile.load(path)
    assert not users.check("alice", "wrong")
    assert f"alice:{old_hash('correct horse')}" in path.read_text(), "no upgrade on failure"
    assert users.check("alice", "correct horse")
    lines = path.read_text().splitlines()
    assert lines[0] == "# users" and lines[1] == bob and lines[3] == ""
    assert lines[4] == f"carol:{old_hash('c')}"
    alice = lines[2].removeprefix("alice:")
    assert alice.startswith(f"scrypt${2**17}$8$1$") and passwords.SCRYPT_N == 2**17
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = PasswordFile.load(path)
    assert again.check("alice", "correct horse") and again.check("bob", "bobs secret")


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ("1073741824$8$1", "N must be a power of two"),
        ("1048576$8$1", "128*r*N at most 256 MiB"),
        ("1048576$2$16", "N*r*p"),
        ("16384$8$1000", "p 1..16"),
    ],
)
def test_absurd_scrypt_parameters_are_refused(tmp_path: Path, params: str, reason: str) -> None:
    salt_hash = old_hash("x").split("$", 4)[4]
    path = tmp_path / "passwd"
    path.write_text(f"eve:scrypt${params}${salt_hash}\n")
    with pytest.raises(AuthError, match=r"passwd:1: bad password hash for 'eve'") as caught:
        PasswordFile.load(path)
    assert reason in str(caught.value)
    assert not verify_password("x", f"scrypt${params}${salt_hash}")
