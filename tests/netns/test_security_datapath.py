"""The data path's defences on the real kernel: a real gateway and clients in throwaway
namespaces, and a raw TLS client that sends what the real client never would."""

from __future__ import annotations

import os
import ssl
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.netns.harness import HOST, LAN, Testbed, connected, wait_for
from tests.netns.test_vpn import _client_context, _tls_to_gateway, start_client, start_server
from vpn import protocol
from vpn.credentials import pki as pki_mod
from vpn.iface.vnet import PLAIN_VNET_HDR, VNET_HDR_F_NEEDS_CSUM, VNET_HDR_GSO_TCPV6
from vpn.packets import udp

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root for network namespaces and TUN devices"
)

SUBNET = "10.210.0.0/24"
IN_SUBNET = "10.210.0.1"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return pki_mod.lab_pki(tmp_path_factory.mktemp("pki"), clients=("client1", "client2"))


RECEIVER = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 9999)); s.settimeout(3)
try:
    while True:
        data, addr = s.recvfrom(2048); print(data.decode(errors="replace"), flush=True)
except TimeoutError:
    pass
"""


def receive(bed: Testbed, ns: str, send: object) -> list[str]:
    """What a UDP receiver on port 9999 in `ns` gets while `send()` runs."""
    receiver = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c", RECEIVER],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.5)
        send()  # type: ignore[operator]
        out, _ = receiver.communicate(timeout=10)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()
    return out.split()


def row(bed: Testbed, identity: str) -> dict:
    status = bed.status(bed.gateway)
    assert status is not None
    rows = [r for r in status["clients"] if r["identity"] == identity]
    assert rows, f"{identity} is not connected"
    return rows[0]


@pytest.mark.parametrize("client_to_client", [False, True])
def test_client_to_client_off_covers_client_subnets(
    bed: Testbed, pki: dict[str, Path], client_to_client: bool
) -> None:
    extra = ["--client-subnet", f"client2={SUBNET}"]
    start_server(bed, pki, *extra, *(["--client-to-client"] if client_to_client else []))
    start_client(bed, pki, "client1")
    start_client(bed, pki, "client2")
    one = wait_for("client1", lambda: connected(bed, bed.clients["client1"]))
    wait_for("client2", lambda: connected(bed, bed.clients["client2"]))
    bed.run(bed.clients["client2"], "ip", "addr", "add", f"{IN_SUBNET}/32", "dev", "lo", check=True)
    bed.run(bed.clients["client1"], "ip", "route", "add", SUBNET, "dev", one["tun"], check=True)
    before = row(bed, "client1")["dropped_filtered"]
    sender = f"import socket; socket.socket(2, 2).sendto(b'across', ('{IN_SUBNET}', 9999))"
    got = receive(
        bed,
        bed.clients["client2"],
        lambda: bed.run(bed.clients["client1"], sys.executable, "-c", sender),
    )
    if client_to_client:
        assert got == ["across"]
    else:
        assert got == [], "client-to-client is off: nothing may reach client2's subnet"
        assert row(bed, "client1")["dropped_filtered"] > before
    assert bed.ping(bed.clients["client1"], HOST), "the LAN stays reachable"


def raw_session(
    bed: Testbed, pki: dict[str, Path], name: str, features: set[str]
) -> tuple[ssl.SSLSocket, protocol.Config]:
    """A TLS connection as client2 that says HELLO and reads its CONFIG, then is the test's."""
    gateway = bed.add_client(name)
    sock = _tls_to_gateway(bed, bed.clients[name], gateway, _client_context(pki, "client2"))
    hello = protocol.Hello(protocol.VERSION, "client2", frozenset(features))
    sock.sendall(hello.encode())
    sock.settimeout(5)
    data = b""
    while True:
        data += sock.recv(65536)
        frames, _ = protocol.split_frames(memoryview(data), 0, len(data))
        for frame in frames:
            if frame.type == protocol.MsgType.CONFIG:
                return sock, protocol.decode_config(frame.payload)
            assert frame.type != protocol.MsgType.ERROR, protocol.decode_reason(frame.payload)


def vnet(flags: int, gso_type: int, hdr_len: int, gso_size: int, start: int, offset: int) -> bytes:
    return struct.pack("=BBHHHH", flags, gso_type, hdr_len, gso_size, start, offset)


def test_bad_virtio_net_hdr_from_a_client_is_dropped_and_counted(
    bed: Testbed, pki: dict[str, Path]
) -> None:
    start_server(bed, pki)
    if not bed.status(bed.gateway)["offload"]:
        pytest.skip("this kernel's TUN has no offloads")
    start_client(bed, pki, "client1")
    wait_for("client1", lambda: connected(bed, bed.clients["client1"]))
    sock, config = raw_session(bed, pki, "raw", {protocol.FEATURE_OFFLOAD})
    own = str(config.address.ip)

    def packet(header: bytes, text: str) -> bytes:
        return protocol.encode(
            protocol.MsgType.DATA, header + udp(own, HOST, 1, 9999, text.encode())
        )

    def send() -> None:
        sock.sendall(
            # a checksum the kernel would write over the UDP ports, and GSO for IPv6 on IPv4
            packet(vnet(VNET_HDR_F_NEEDS_CSUM, 0, 0, 0, 20, 0), "bad-csum")
            + packet(vnet(0, VNET_HDR_GSO_TCPV6, 28, 100, 0, 0), "bad-gso")
            + packet(PLAIN_VNET_HDR, "good")
        )

    got = receive(bed, bed.host, send)
    assert got == ["good"], got
    counters = row(bed, "client2")
    assert counters["dropped_bad_vnet"] == 2, counters
    sock.close()
    assert bed.ping(bed.clients["client1"], HOST, count=2), "offloaded traffic still flows"


def mac_of(bed: Testbed, ns: str, ifname: str) -> bytes:
    out = bed.run(ns, "cat", f"/sys/class/net/{ifname}/address", check=True).stdout
    return bytes.fromhex(out.strip().replace(":", ""))


def arp(source: bytes, sender_ip: str) -> bytes:
    sender = bytes(int(x) for x in sender_ip.split("."))
    body = b"\x00\x01\x08\x00\x06\x04\x00\x01" + source + sender + bytes(6) + bytes(4)
    return b"\xff" * 6 + source + b"\x08\x06" + body


def test_tap_client_cannot_take_another_stations_mac(bed: Testbed, pki: dict[str, Path]) -> None:
    gw = bed.gateway
    for argv in (
        ["ip", "link", "add", "br0", "type", "bridge"],
        ["ip", "addr", "flush", "dev", "lan0"],
        ["ip", "link", "set", "lan0", "master", "br0"],
        ["ip", "addr", "add", "10.202.0.1/24", "dev", "br0"],
        ["ip", "link", "set", "br0", "up"],
    ):
        bed.run(gw, *argv, check=True)
    start_server(
        bed, pki, "--tap", "--bridge", "br0", "--pool", "10.202.0.96/28", "--tap-network", LAN
    )
    start_client(bed, pki, "client1")
    ns = bed.clients["client1"]
    status = wait_for("client1", lambda: connected(bed, ns))
    assert bed.ping(ns, HOST, count=2)
    features = {protocol.FEATURE_TAP}
    if bed.status(gw)["offload"]:
        features.add(protocol.FEATURE_OFFLOAD)
    sock, config = raw_session(bed, pki, "raw", features)
    own = str(config.address.ip)
    victim, lan_host = mac_of(bed, ns, status["tun"]), mac_of(bed, bed.host, "eth0")
    frames = [arp(victim, own), arp(lan_host, own)]
    sock.sendall(b"".join(protocol.encode(protocol.MsgType.DATA, f) for f in frames))
    # (before the raw session, which sends no keepalives, is dropped as a dead peer)
    bed.run(ns, "ip", "neigh", "flush", "all")
    assert bed.ping(ns, HOST, count=3), "client1's traffic must still come to client1"
    counters = row(bed, "client2")
    assert counters["dropped_spoofed"] == 2, "both frames with another station's MAC dropped"
    sock.close()
