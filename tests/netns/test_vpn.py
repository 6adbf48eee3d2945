"""The VPN end to end on the real kernel: namespaces, TUN devices, TLS, packets.

Each test builds its own testbed (unique namespace names) and removes it, on failure too.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.netns.harness import (
    HOST,
    LAN,
    POOL,
    Testbed,
    client_args,
    connected,
    server_args,
    wait_for,
)
from vpn import protocol
from vpn.credentials import pki as pki_mod

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="needs root for network namespaces and TUN devices (run as root: sudo make test)",
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return pki_mod.lab_pki(tmp_path_factory.mktemp("pki"), clients=("client1", "client2"))


def start_server(bed: Testbed, pki: dict[str, Path], *extra: str, crl: bool = False):
    server = bed.spawn(bed.gateway, "server", server_args(pki, *extra, crl=crl))
    wait_for(
        "the server to listen", lambda: "event=listening" in server.output() or not server.alive()
    )
    assert server.alive(), server.output()
    return server


def start_client(
    bed: Testbed, pki: dict[str, Path], name: str, *extra: str, cert: str | None = None
):
    gateway = bed.add_client(name)
    args = client_args(pki["dir"], cert or name, gateway, *extra)
    return bed.spawn(bed.clients[name], name, args)


def test_ping_reaches_the_lan_through_the_tunnel_and_back(
    bed: Testbed, pki: dict[str, Path]
) -> None:
    server = start_server(bed, pki)
    start_client(bed, pki, "client1")
    ns = bed.clients["client1"]
    assert not bed.ping(ns, HOST), "the LAN must be unreachable before the tunnel"
    status = wait_for("client1 to connect", lambda: connected(bed, ns))
    address = status["address"].split("/")[0]
    assert address in {str(a) for a in __import__("ipaddress").ip_network(POOL).hosts()}
    route = bed.run(ns, "ip", "route", "get", HOST).stdout
    assert f"dev {status['tun']}" in route, route
    assert bed.ping(ns, HOST, count=3)
    assert bed.ping(bed.host, address, count=2), "the LAN host must reach the client's VPN address"
    big = bed.ping(ns, HOST, count=1, size=3000)  # fragmented on the LAN side
    assert big
    server_status = bed.status(bed.gateway)
    (row,) = server_status["clients"]
    assert row["identity"] == "client1" and row["address"] == address
    assert row["rx_packets"] >= 3 and row["tx_packets"] >= 3
    assert "event=connect identity=client1" in server.output()


def test_client_exit_removes_everything_it_added(bed: Testbed, pki: dict[str, Path]) -> None:
    start_server(bed, pki)
    client = start_client(bed, pki, "client1")
    ns = bed.clients["client1"]
    wait_for("client1 to connect", lambda: connected(bed, ns))
    before = bed.run(ns, "ip", "-o", "link").stdout
    assert "vpn0" in before
    assert client.stop(signal.SIGTERM) == 0, client.output()
    assert "vpn0" not in bed.run(ns, "ip", "-o", "link").stdout
    assert LAN not in bed.run(ns, "ip", "route").stdout


def test_two_clients_get_distinct_addresses_and_both_reach_the_lan(
    bed: Testbed, pki: dict[str, Path]
) -> None:
    start_server(bed, pki)
    start_client(bed, pki, "client1")
    start_client(bed, pki, "client2")
    one = wait_for("client1", lambda: connected(bed, bed.clients["client1"]))
    two = wait_for("client2", lambda: connected(bed, bed.clients["client2"]))
    assert one["address"] != two["address"]
    assert bed.ping(bed.clients["client1"], HOST, count=2)
    assert bed.ping(bed.clients["client2"], HOST, count=2)
    # client-to-client is off by default: dropped at the gateway and counted
    assert not bed.ping(bed.clients["client1"], two["address"].split("/")[0], count=1)
    totals = bed.status(bed.gateway)["totals"]
    assert totals["dropped_filtered"] >= 1


def test_client_to_client_when_enabled(bed: Testbed, pki: dict[str, Path]) -> None:
    start_server(bed, pki, "--client-to-client")
    start_client(bed, pki, "client1")
    start_client(bed, pki, "client2")
    wait_for("client1", lambda: connected(bed, bed.clients["client1"]))
    two = wait_for("client2", lambda: connected(bed, bed.clients["client2"]))
    assert bed.ping(bed.clients["client1"], two["address"].split("/")[0], count=2)


def test_server_killed_and_restarted_client_reconnects_with_same_address(
    bed: Testbed, pki: dict[str, Path]
) -> None:
    server = start_server(bed, pki)
    client = start_client(bed, pki, "client1")
    ns = bed.clients["client1"]
    first = wait_for("client1", lambda: connected(bed, ns))
    server.stop(signal.SIGKILL)
    # the kernel removed the server's TUN with the process; start again
    start_server(bed, pki)
    again = wait_for(
        "client1 to reconnect", lambda: (s := connected(bed, ns)) and s["reconnects"] >= 1 and s
    )
    assert again["address"] == first["address"]
    assert bed.ping(ns, HOST, count=2), client.output()


@pytest.mark.parametrize(
    ("cert", "server_reason", "client_reason"),
    [
        ("expired", "expired", "refused"),
        ("revoked", "revoked", "refused"),
        ("rogue-client", "unknown", "refused"),
    ],
)
def test_bad_client_certificates_are_refused_while_a_good_client_works(
    bed: Testbed, pki: dict[str, Path], cert: str, server_reason: str, client_reason: str
) -> None:
    server = start_server(bed, pki, crl=True)
    start_client(bed, pki, "client1")
    good = bed.clients["client1"]
    wait_for("client1", lambda: connected(bed, good))
    certs = pki["rogue_dir"] if cert.startswith("rogue") else pki["dir"]
    gateway = bed.add_client("bad")
    args = client_args(certs, cert, gateway, ca=pki["ca"])
    bad = bed.spawn(bed.clients["bad"], "bad", args)
    assert bad.popen.wait(20) == 2, bad.output()
    assert client_reason in bad.output()
    wait_for("the server's reason", lambda: "event=auth_failed" in server.output())
    line = next(x for x in server.output().splitlines() if "event=auth_failed" in x)
    assert server_reason in line.lower(), line
    assert bed.ping(good, HOST, count=2)


def test_client_refuses_an_impostor_gateway(bed: Testbed, pki: dict[str, Path]) -> None:
    pki_impostor = dict(pki, server=pki["impostor"], **{"server.key": pki["impostor.key"]})
    start_server(bed, pki_impostor)
    client = start_client(bed, pki, "client1")
    assert client.popen.wait(20) == 2, client.output()
    assert "server name mismatch" in client.output() and "gateway" in client.output()


def test_client_refuses_a_gateway_from_another_ca(bed: Testbed, pki: dict[str, Path]) -> None:
    rogue = dict(pki, server=pki["rogue-gateway"], **{"server.key": pki["rogue-gateway.key"]})
    start_server(bed, rogue)
    client = start_client(bed, pki, "client1")
    assert client.popen.wait(20) == 2, client.output()
    assert "refused the gateway" in client.output()


def test_password_login(bed: Testbed, pki: dict[str, Path], tmp_path: Path) -> None:
    passwords = tmp_path / "passwd"
    for user, secret in (("alice", "correct horse"),):
        subprocess.run(
            [sys.executable, "-m", "vpn", "passwd", str(passwords), user, "--password-stdin"],
            input=secret + "\n", text=True, check=True, capture_output=True,
        )  # fmt: skip
    server = start_server(bed, pki, "--passwords", str(passwords))
    good_pw, bad_pw = tmp_path / "good", tmp_path / "bad"
    good_pw.write_text("correct horse\n")
    bad_pw.write_text("wrong\n")
    start_client(bed, pki, "client1", "--user", "alice", "--password-file", str(good_pw))
    wait_for("alice", lambda: connected(bed, bed.clients["client1"]))
    bad = start_client(bed, pki, "client2", "--user", "alice", "--password-file", str(bad_pw))
    assert bad.popen.wait(20) == 2, bad.output()
    assert "wrong user name or password" in bad.output()
    nologin = start_client(bed, pki, "nologin", cert="client2")
    assert nologin.popen.wait(20) == 2
    assert "requires a user name and password" in nologin.output()
    assert "wrong user name or password" in server.output()
    assert bed.ping(bed.clients["client1"], HOST)


def _tls_to_gateway(bed: Testbed, ns: str, gateway: str, context: ssl.SSLContext):
    """A raw TLS connection from inside ns (a thread's netns is switched for the connect)."""
    from pyroute2 import netns as pr_netns

    box: dict[str, object] = {}

    def connect() -> None:
        try:
            pr_netns.setns(ns, flags=0)
            raw = socket.create_connection((gateway, 4433), timeout=5)
            box["sock"] = context.wrap_socket(raw, server_hostname="gateway")
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=connect)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["sock"]


def _client_context(pki: dict[str, Path], name: str, **kw) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki["ca"])
    if name:
        ctx.load_cert_chain(pki[name], pki[f"{name}.key"])
    for key, value in kw.items():
        setattr(ctx, key, value)
    return ctx


def _read_error(sock: ssl.SSLSocket) -> str:
    data = b""
    sock.settimeout(5)
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (OSError, ssl.SSLError) as exc:
        return f"{data!r} {exc}"
    frames, _ = protocol.split_frames(memoryview(data), 0, len(data))
    return " | ".join(
        protocol.decode_reason(f.payload)[0] for f in frames if f.type == protocol.MsgType.ERROR
    )


@pytest.mark.parametrize(
    ("garbage", "reason"),
    [
        (struct.pack("!I", 77 << 24), "unknown frame type 77"),
        (struct.pack("!I", protocol.MsgType.DATA << 24 | 0xFFFFFF), "exceeds the limit"),
        (protocol.encode(protocol.MsgType.DATA, b"\x45" + bytes(40)), "DATA out of order"),
        (protocol.encode(protocol.MsgType.HELLO, b"{not json"), "not a JSON object"),
    ],
)
def test_malformed_frames_close_only_that_session(
    bed: Testbed, pki: dict[str, Path], garbage: bytes, reason: str
) -> None:
    server = start_server(bed, pki)
    start_client(bed, pki, "client1")
    good = bed.clients["client1"]
    wait_for("client1", lambda: connected(bed, good))
    gateway = bed.add_client("raw")
    sock = _tls_to_gateway(bed, bed.clients["raw"], gateway, _client_context(pki, "client2"))
    sock.sendall(garbage)
    assert reason in _read_error(sock)
    sock.close()
    wait_for("the server's log line", lambda: reason in server.output())
    assert bed.ping(good, HOST, count=2)
    assert server.alive()


def test_tls12_and_certificateless_clients_are_refused(bed: Testbed, pki: dict[str, Path]) -> None:
    server = start_server(bed, pki)
    gateway = bed.add_client("raw")
    old = _client_context(pki, "client1", maximum_version=ssl.TLSVersion.TLSv1_2)
    with pytest.raises(ssl.SSLError):
        _tls_to_gateway(bed, bed.clients["raw"], gateway, old)
    bare = _tls_to_gateway(bed, bed.clients["raw"], gateway, _client_context(pki, ""))
    _read_error(bare)  # the server's alert arrives on the first read
    bare.close()
    wait_for("two refusals", lambda: server.output().count("event=auth_failed") >= 2)
    text = server.output()
    assert "peer offered TLS below 1.3" in text, text
    assert "peer did not send a certificate" in text, text


def test_spoofed_source_is_dropped_and_counted(bed: Testbed, pki: dict[str, Path]) -> None:
    start_server(bed, pki)
    start_client(bed, pki, "client1")
    ns = bed.clients["client1"]
    status = wait_for("client1", lambda: connected(bed, ns))
    own = status["address"].split("/")[0]
    receiver = subprocess.Popen(
        ["ip", "netns", "exec", bed.host, sys.executable, "-c", RECEIVER],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.5)
        sent = bed.run(ns, sys.executable, "-c", SENDER, own, "10.203.0.250", HOST)
        assert sent.returncode == 0, sent.stderr
        out, _ = receiver.communicate(timeout=10)
    finally:
        if receiver.poll() is None:
            receiver.kill()
    received = set(out.split())
    assert own in received, "the genuine packet must arrive"
    assert "10.203.0.250" not in received, "the spoofed packet must never reach the LAN"
    # Two spoofed packets were sent: both are dropped and counted, not just one.
    wait_for("the drop counter", lambda: bed.status(bed.gateway)["totals"]["dropped_spoofed"] >= 2)
    time.sleep(0.5)  # a third count would be a double count of one of them
    totals = bed.status(bed.gateway)["totals"]
    assert totals["dropped_spoofed"] == 2, totals


RECEIVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 9999)); s.settimeout(3)
try:
    while True:
        data, addr = s.recvfrom(2048); print(addr[0], flush=True)
except TimeoutError:
    pass
"""

SENDER = """
import socket, sys
from vpn.packets import udp
own, spoofed, dst = sys.argv[1:4]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for src in (spoofed, own, spoofed):
    s.sendto(udp(src, dst, 9998, 9999, b"hello"), (dst, 0))
"""


def test_server_reports_busy_port_and_forwarding_off(bed: Testbed, pki: dict[str, Path]) -> None:
    first = start_server(bed, pki)
    second = bed.spawn(
        bed.gateway, "second", server_args(pki, "--control", "@other", "--tun", "vpn1")
    )
    assert second.popen.wait(15) == 1
    assert "address already in use" in second.output()
    first.stop()
    bed.run(bed.gateway, "sysctl", "-qw", "net.ipv4.ip_forward=0", check=True)
    third = bed.spawn(bed.gateway, "third", server_args(pki))
    assert third.popen.wait(15) == 1
    assert "--enable-forwarding" in third.output()
    fourth = bed.spawn(bed.gateway, "fourth", server_args(pki, "--enable-forwarding"))
    wait_for("listening", lambda: "event=listening" in fourth.output())
    assert bed.run(bed.gateway, "sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "1"
    fourth.stop()
    assert bed.run(bed.gateway, "sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "0"


def test_layer2_tap_mode_joins_the_lan_by_arp(bed: Testbed, pki: dict[str, Path]) -> None:
    """The gateway bridges its TAP with the LAN; the client gets a LAN address and ARPs."""
    gw = bed.gateway
    for argv in (
        ["ip", "link", "add", "br0", "type", "bridge"],
        ["ip", "addr", "flush", "dev", "lan0"],
        ["ip", "link", "set", "lan0", "master", "br0"],
        ["ip", "addr", "add", "10.202.0.1/24", "dev", "br0"],
        ["ip", "link", "set", "br0", "up"],
    ):
        bed.run(gw, *argv, check=True)
    server = start_server(
        bed, pki, "--tap", "--bridge", "br0", "--pool", "10.202.0.96/28", "--tap-network", LAN
    )
    start_client(bed, pki, "client1")
    ns = bed.clients["client1"]
    status = wait_for("client1", lambda: connected(bed, ns))
    address = status["address"]
    assert address.endswith("/24") and address.startswith("10.202.0."), address
    details = bed.run(ns, "ip", "-d", "link", "show", status["tun"]).stdout
    assert "tun type tap" in details, details
    assert bed.ping(ns, HOST, count=3), server.output()
    neighbours = bed.run(ns, "ip", "neigh", "show", HOST).stdout
    assert "lladdr" in neighbours, f"no ARP entry for {HOST}: {neighbours!r}"
    assert bed.ping(bed.host, address.split("/")[0], count=2)
    server_status = bed.status(gw)
    assert server_status["mode"] == "tap"
