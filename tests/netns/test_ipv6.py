"""IPv6 through the VPN on the real kernel: namespaces, TUN devices, TLS, packets.

The testbed of harness.py is IPv4 only; each test here gives the LAN (and, for the outer IPv6
tests, the client's link) IPv6 addresses of its own, in its own namespaces.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.netns.harness import Testbed, client_args, connected, server_args, sh, wait_for
from vpn.credentials import pki as pki_mod

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="needs root for network namespaces and TUN devices (run as root: sudo make test)",
)

POOL6 = "fd00:53::/64"
SERVER6 = "fd00:53::1"
LAN6 = "fd00:202::/64"
GATEWAY_LAN6 = "fd00:202::1"
HOST6 = "fd00:202::2"
SITE6 = "fd00:250::/64"  # a client subnet behind client1
SITE_HOST6 = "fd00:250::1"
MTU = 1400


def outer6(index: int, end: int) -> str:
    """The IPv6 address of end 1 (gateway) or 2 (client) of client link `index`."""
    return f"fd00:201:{index}::{end}"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    # The gateway's certificate also names its IPv6 address on client link 1 (an IP SAN).
    return pki_mod.lab_pki(
        tmp_path_factory.mktemp("pki6"),
        server_sans=(f"ip:{outer6(1, 1)}", "gw6.test"),
        clients=("client1", "client2"),
    )


def lan6(bed: Testbed) -> None:
    """IPv6 on the testbed's LAN: the gateway and the host, the host routing the pool6 back."""
    sh("ip", "-n", bed.gateway, "addr", "add", f"{GATEWAY_LAN6}/64", "dev", "lan0", "nodad")
    sh("ip", "-n", bed.host, "addr", "add", f"{HOST6}/64", "dev", "eth0", "nodad")
    sh("ip", "-n", bed.host, "-6", "route", "add", POOL6, "via", GATEWAY_LAN6)


def start_server(bed: Testbed, pki: dict[str, Path], *extra: str, lan: bool = True):
    if lan:
        lan6(bed)
    args = server_args(
        pki, "--pool6", POOL6, "--route", LAN6, "--enable-forwarding", "--mtu", str(MTU), *extra
    )
    server = bed.spawn(bed.gateway, "server", args)
    wait_for(
        "the server to listen", lambda: "event=listening" in server.output() or not server.alive()
    )
    assert server.alive(), server.output()
    return server


def start_client(bed: Testbed, pki: dict[str, Path], name: str, *extra: str, server: str = ""):
    gateway = bed.add_client(name)
    args = client_args(pki["dir"], name, server or gateway, *extra)
    return bed.spawn(bed.clients[name], name, args)


def up6(bed: Testbed, name: str) -> dict:
    ns = bed.clients[name]
    return wait_for(f"{name} to connect", lambda: (s := connected(bed, ns)) and s["address6"] and s)


def ping6(bed: Testbed, ns: str, address: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return bed.run(ns, "ping", "-6", "-n", "-c", "2", "-W", "2", "-i", "0.2", *extra, address)


def test_client_gets_ipv6_address_and_routes_and_pings_through_the_tunnel(
    bed: Testbed, pki: dict[str, Path]
) -> None:
    server = start_server(bed, pki)
    start_client(bed, pki, "client1")
    ns = bed.clients["client1"]
    status = up6(bed, "client1")
    address6 = ipaddress.IPv6Interface(status["address6"])
    assert address6.network == ipaddress.IPv6Network(POOL6) and str(address6.ip) != SERVER6
    assert status["routes6"] == [LAN6]
    shown = bed.run(ns, "ip", "-6", "addr", "show", "dev", "vpn0").stdout
    assert f"inet6 {address6}" in shown and "nodad" in shown, shown
    assert "fe80:" not in shown, "no link-local address: the kernel sends nothing of its own"
    route = bed.run(ns, "ip", "-6", "route", "get", HOST6).stdout
    assert "dev vpn0" in route, route
    assert ping6(bed, ns, SERVER6).returncode == 0, "the gateway's TUN IPv6 address answers"
    assert ping6(bed, ns, HOST6).returncode == 0, "a LAN host answers through the tunnel"
    assert ping6(bed, bed.host, str(address6.ip)).returncode == 0, "the LAN reaches the client"
    gateway = bed.status(bed.gateway)
    assert gateway["address6"] == f"{SERVER6}/64"
    (row,) = gateway["clients"]
    assert row["address6"] == str(address6.ip)
    text = bed.run(bed.gateway, sys.executable, "-m", "vpn", "status").stdout
    assert str(address6.ip) in text, text
    assert f"address6={address6.ip}" in server.output()
    assert row["dropped_spoofed"] == 0 and row["dropped_invalid"] == 0, row


def test_tcp_over_ipv6_crosses_as_offloaded_super_packets(
    bed: Testbed, pki: dict[str, Path]
) -> None:
    """A bulk TCP transfer over IPv6: the client's TUN hands TCPV6 GSO super-packets, which the
    gateway's vnet_hdr check must let through (and count nothing as bad)."""
    start_server(bed, pki)
    start_client(bed, pki, "client1")
    ns = bed.clients["client1"]
    up6(bed, "client1")
    sink = subprocess.Popen(
        ["ip", "netns", "exec", bed.host, sys.executable, "-c", TCP_SINK, HOST6],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.5)
        sent = bed.run(ns, sys.executable, "-c", TCP_SOURCE, HOST6, timeout=30)
        assert sent.returncode == 0, sent.stderr
        out, _ = sink.communicate(timeout=20)
    finally:
        if sink.poll() is None:
            sink.kill()
            sink.wait(5)
    assert out.strip() == str(8 << 20)
    totals = bed.status(bed.gateway)["totals"]
    assert totals["dropped_bad_vnet"] == 0 and totals["dropped_spoofed"] == 0, totals


def test_same_identity_gets_the_same_ipv6_address_after_a_server_restart(
    bed: Testbed, pki: dict[str, Path]
) -> None:
    server = start_server(bed, pki)
    start_client(bed, pki, "client1")
    ns = bed.clients["client1"]
    first = up6(bed, "client1")
    server.stop(signal.SIGKILL)
    start_server(bed, pki, lan=False)
    again = wait_for(
        "client1 to reconnect", lambda: (s := connected(bed, ns)) and s["reconnects"] >= 1 and s
    )
    assert again["address6"] == first["address6"]
    assert ping6(bed, ns, HOST6).returncode == 0


def test_spoofed_ipv6_source_is_dropped_and_counted(bed: Testbed, pki: dict[str, Path]) -> None:
    start_server(bed, pki)
    start_client(bed, pki, "client1")
    ns = bed.clients["client1"]
    own = str(ipaddress.IPv6Interface(up6(bed, "client1")["address6"]).ip)
    spoofed = "fd00:53::beef"  # in the pool, not the client's
    receiver = subprocess.Popen(
        ["ip", "netns", "exec", bed.host, sys.executable, "-c", UDP_RECEIVER],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.5)
        sent = bed.run(ns, sys.executable, "-c", UDP_SENDER, own, spoofed, HOST6)
        assert sent.returncode == 0, sent.stderr
        out, _ = receiver.communicate(timeout=10)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait(5)
    received = set(out.split())
    assert own in received, "the genuine packet must arrive"
    assert spoofed not in received, "the spoofed packet must never reach the LAN"
    wait_for("the drop counter", lambda: bed.status(bed.gateway)["totals"]["dropped_spoofed"] >= 1)
    time.sleep(0.5)  # a second count would be a double count
    totals = bed.status(bed.gateway)["totals"]
    assert totals["dropped_spoofed"] == 1, totals


def test_oversize_ipv6_packet_gets_packet_too_big_and_pmtu_is_learned(
    bed: Testbed, pki: dict[str, Path]
) -> None:
    start_server(bed, pki)
    start_client(bed, pki, "client1")
    own = str(ipaddress.IPv6Interface(up6(bed, "client1")["address6"]).ip)
    catcher = subprocess.Popen(
        ["ip", "netns", "exec", bed.host, sys.executable, "-c", PTB_CATCHER],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.5)
        big = MTU - 40 - 8 + 100  # an ICMPv6 echo 100 bytes over the tunnel's MTU
        result = ping6(bed, bed.host, own, "-M", "do", "-s", str(big))
        out, _ = catcher.communicate(timeout=10)
    finally:
        if catcher.poll() is None:
            catcher.kill()
            catcher.wait(5)
    text = result.stdout + result.stderr
    assert "too big" in text.lower() and f"mtu={MTU}" in text, text
    # The Packet Too Big the host got: from the gateway, for the tunnel's MTU, checksum right.
    source, mtu, checksum_ok = out.split()
    assert source == GATEWAY_LAN6 and int(mtu) == MTU and checksum_ok == "True", out
    # Path-MTU discovery: the host now sends the client packets that fit, and they cross.
    assert f"mtu {MTU}" in bed.run(bed.host, "ip", "-6", "route", "get", own).stdout
    assert ping6(bed, bed.host, own, "-s", str(big)).returncode == 0


def test_ipv6_client_subnet_site_to_site(bed: Testbed, pki: dict[str, Path]) -> None:
    start_server(bed, pki, "--client-subnet", f"client1={SITE6}")
    start_client(bed, pki, "client1")
    ns = bed.clients["client1"]
    up6(bed, "client1")
    # The "site": an address of the subnet on the client's own loopback.
    sh("ip", "-n", ns, "addr", "add", f"{SITE_HOST6}/128", "dev", "lo")
    sh("ip", "-n", bed.host, "-6", "route", "add", SITE6, "via", GATEWAY_LAN6)
    assert f"{SITE6} dev vpn0" in bed.run(bed.gateway, "ip", "-6", "route").stdout
    assert ping6(bed, ns, HOST6, "-I", SITE_HOST6).returncode == 0
    assert ping6(bed, bed.host, SITE_HOST6).returncode == 0
    (row,) = bed.status(bed.gateway)["clients"]
    assert row["subnets"] == [SITE6] and row["dropped_spoofed"] == 0, row


def test_client_reaches_an_ipv6_outer_address_of_a_dual_stack_server(
    bed: Testbed, pki: dict[str, Path]
) -> None:
    """The server listens on [::] by default: one client connects over IPv6 (literal, checked
    against the certificate's IPv6 IP SAN), another over IPv4 at the same time."""
    start_server(bed, pki)
    gateway4 = bed.add_client("client1")
    ns = bed.clients["client1"]
    sh("ip", "-n", bed.gateway, "addr", "add", f"{outer6(1, 1)}/64", "dev", "wan1", "nodad")
    sh("ip", "-n", ns, "addr", "add", f"{outer6(1, 2)}/64", "dev", "eth0", "nodad")
    args = client_args(pki["dir"], "client1", f"[{outer6(1, 1)}]")
    args[args.index("--server-name") + 1] = outer6(1, 1)
    bed.spawn(ns, "client1", args)
    start_client(bed, pki, "client2")
    status = up6(bed, "client1")
    assert status["server"] == f"{outer6(1, 1)}:4433"
    up6(bed, "client2")
    peers = {c["identity"]: c["peer"] for c in bed.status(bed.gateway)["clients"]}
    assert peers["client1"].startswith(outer6(1, 2) + ":"), peers
    assert peers["client2"].startswith("10.201.2.2:"), peers  # shown as IPv4, not ::ffff:
    assert ping6(bed, ns, HOST6).returncode == 0
    assert gateway4 == "10.201.1.1"


def test_client_connects_to_a_name_that_resolves_to_ipv6(
    bed: Testbed, pki: dict[str, Path]
) -> None:
    bed.add_client("client1")
    ns = bed.clients["client1"]
    sh("ip", "-n", bed.gateway, "addr", "add", f"{outer6(1, 1)}/64", "dev", "wan1", "nodad")
    sh("ip", "-n", ns, "addr", "add", f"{outer6(1, 2)}/64", "dev", "eth0", "nodad")
    start_server(bed, pki, "--listen", f"[{outer6(1, 1)}]:4433")
    hosts = Path("/etc/netns") / ns / "hosts"  # removed with the testbed's /etc/netns/NS
    hosts.write_text(f"127.0.0.1 localhost\n{outer6(1, 1)} gw6.test\n")
    args = client_args(pki["dir"], "client1", "gw6.test")
    args[args.index("--server-name") + 1] = "gw6.test"
    bed.spawn(ns, "client1", args)
    up6(bed, "client1")
    listening = bed.run(bed.gateway, "ss", "-Htln", "sport", "=", ":4433").stdout
    assert f"[{outer6(1, 1)}]:4433" in listening, listening
    assert ping6(bed, ns, HOST6).returncode == 0


def test_an_ipv6_route_pushed_on_reload_reaches_the_client_without_a_reconnect(
    bed: Testbed, pki: dict[str, Path], tmp_path: Path
) -> None:
    settings = tmp_path / "server.toml"
    settings.write_text(f'route = ["{LAN6}"]\n')
    lan6(bed)
    args = server_args(pki, "--pool6", POOL6, "--enable-forwarding", "--config", str(settings))
    at = args.index("--route")
    del args[at : at + 2]  # from the file, or the flag would win over it
    server = bed.spawn(bed.gateway, "server", args)
    wait_for("the server", lambda: "event=listening" in server.output() or not server.alive())
    start_client(bed, pki, "client1")
    ns = bed.clients["client1"]
    up6(bed, "client1")
    extra = "fd00:209::/64"
    settings.write_text(f'route = ["{LAN6}", "{extra}"]\n')
    server.popen.send_signal(signal.SIGHUP)
    wait_for(
        "the new route", lambda: f"{extra} dev vpn0" in bed.run(ns, "ip", "-6", "route").stdout
    )
    status = connected(bed, ns)
    assert status is not None and status["reconnects"] == 0 and status["updates"] == 1
    assert status["routes6"] == [LAN6, extra]
    settings.write_text(f'route = ["{LAN6}"]\n')
    server.popen.send_signal(signal.SIGHUP)
    wait_for("the route gone", lambda: extra not in bed.run(ns, "ip", "-6", "route").stdout)
    assert ping6(bed, ns, HOST6).returncode == 0, "the LAN route stays"


def test_two_clients_get_distinct_ipv6_addresses_and_client_to_client_off_covers_ipv6(
    bed: Testbed, pki: dict[str, Path]
) -> None:
    start_server(bed, pki)
    start_client(bed, pki, "client1")
    start_client(bed, pki, "client2")
    one, two = up6(bed, "client1"), up6(bed, "client2")
    assert one["address6"] != two["address6"]
    for name in ("client1", "client2"):
        assert ping6(bed, bed.clients[name], HOST6).returncode == 0
    two6 = str(ipaddress.IPv6Interface(two["address6"]).ip)
    assert ping6(bed, bed.clients["client1"], two6, "-c", "1").returncode != 0
    rows = {c["identity"]: c for c in bed.status(bed.gateway)["clients"]}
    assert rows["client1"]["dropped_filtered"] >= 1 and rows["client1"]["dropped_spoofed"] == 0
    assert {rows["client1"]["address6"], rows["client2"]["address6"]} == {
        str(ipaddress.IPv6Interface(s["address6"]).ip) for s in (one, two)
    }


def test_pool6_without_ipv6_forwarding_is_refused(bed: Testbed, pki: dict[str, Path]) -> None:
    bed.run(bed.gateway, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=0", check=True)
    server = bed.spawn(bed.gateway, "server", server_args(pki, "--pool6", POOL6))
    wait_for("the server to exit", lambda: not server.alive())
    assert server.popen.returncode != 0
    assert "IPv6 forwarding is off" in server.output(), server.output()


def test_without_pool6_the_tunnel_has_no_ipv6(bed: Testbed, pki: dict[str, Path]) -> None:
    server = bed.spawn(bed.gateway, "server", server_args(pki))
    wait_for("the server", lambda: "event=listening" in server.output() or not server.alive())
    start_client(bed, pki, "client1")
    ns = bed.clients["client1"]
    status = wait_for("client1", lambda: connected(bed, ns))
    assert status["address6"] == "" and status["routes6"] == []
    disabled = bed.run(ns, "sysctl", "-n", "net.ipv6.conf.vpn0.disable_ipv6").stdout.strip()
    assert disabled == "1"
    gateway = bed.run(bed.gateway, "sysctl", "-n", "net.ipv6.conf.vpn0.disable_ipv6")
    assert gateway.stdout.strip() == "1"


def test_pool6_with_a_small_mtu_is_refused(bed: Testbed, pki: dict[str, Path]) -> None:
    args = server_args(pki, "--pool6", POOL6, "--mtu", "1279", "--enable-forwarding")
    server = bed.spawn(bed.gateway, "server", args)
    wait_for("the server to exit", lambda: not server.alive())
    assert server.popen.returncode != 0
    assert "--mtu 1279 is below 1280" in server.output(), server.output()


TCP_SINK = """
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 9997)); s.listen(1); s.settimeout(15)
conn, _ = s.accept(); conn.settimeout(15); total = 0
while chunk := conn.recv(1 << 16):
    total += len(chunk)
print(total)
"""

TCP_SOURCE = """
import socket, sys
s = socket.create_connection((sys.argv[1], 9997), timeout=15)
s.sendall(bytes(8 << 20)); s.close()
"""

UDP_RECEIVER = """
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(("::", 9999)); s.settimeout(3)
try:
    while True:
        data, addr = s.recvfrom(2048); print(addr[0], flush=True)
except TimeoutError:
    pass
"""

UDP_SENDER = """
import socket, sys
from vpn.packets import udp6
own, spoofed, dst = sys.argv[1:4]
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
for src in (spoofed, own):
    s.sendto(udp6(src, dst, 9998, 9999, b"hello"), (dst, 0))
"""

PTB_CATCHER = """
import socket, struct
from vpn.packets import checksum6
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.settimeout(5)
while True:
    data, addr = s.recvfrom(4096)
    if data[0] == 2:  # Packet Too Big
        (mtu,) = struct.unpack("!I", data[4:8])
        dst = socket.inet_ntop(socket.AF_INET6, data[8 + 8 : 8 + 24])  # its source: us
        ok = checksum6(addr[0], dst, 58, data) == 0
        print(addr[0], mtu, ok)
        break
"""
