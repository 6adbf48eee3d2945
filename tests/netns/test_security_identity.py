"""Identity, revocation and the control socket on the real server and client, in throwaway
namespaces (see docs/security.md). Each test has its own PKI: they revoke and re-issue.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509

from tests.netns.harness import HOST, Testbed, client_args, connected, server_args, wait_for
from tests.netns.test_vpn import _client_context, _tls_to_gateway
from vpn import protocol
from vpn.credentials import pki as pki_mod

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="needs root for network namespaces and TUN devices (run as root: sudo make test)",
)

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    return pki_mod.lab_pki(tmp_path / "pki", clients=("client1", "client2"))


def start_server(bed: Testbed, pki: dict[str, Path], *extra: str, crl: bool = True):
    server = bed.spawn(bed.gateway, "server", server_args(pki, *extra, crl=crl))
    wait_for(
        "the server to listen", lambda: "event=listening" in server.output() or not server.alive()
    )
    assert server.alive(), server.output()
    return server


def start_client(bed: Testbed, pki: dict[str, Path], name: str, cert: str | None = None):
    gateway = bed.add_client(name)
    return bed.spawn(bed.clients[name], name, client_args(pki["dir"], cert or name, gateway))


def serial(path: Path) -> str:
    return format(x509.load_pem_x509_certificate(path.read_bytes()).serial_number, "x")


def vpn(*args: str, ns: str | None = None, user: list[str] | None = None):
    argv = [*(user or []), sys.executable, "-m", "vpn", *args]
    if ns:
        argv = ["ip", "netns", "exec", ns, *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd="/")


def exits(process, timeout: float = 15) -> int:
    return process.popen.wait(timeout)


# -- 4: revocation ends live sessions --------------------------------------------------------------


def test_revoking_a_connected_client_ends_its_session_when_the_crl_changes(
    bed: Testbed, pki: dict[str, Path]
) -> None:
    server = start_server(bed, pki)
    one = start_client(bed, pki, "client1")
    two = start_client(bed, pki, "client2")
    wait_for("client1", lambda: connected(bed, bed.clients["client1"]))
    wait_for("client2", lambda: connected(bed, bed.clients["client2"]))
    revoked_at = time.monotonic()
    result = vpn("pki", "revoke", str(pki["dir"]), "client1")  # rewrites crl.pem
    assert result.returncode == 0, result.stderr
    assert exits(one) == 2, one.output()  # retry=false: the client stops
    assert time.monotonic() - revoked_at < 5
    reason = f"certificate revoked (serial {serial(pki['client1'])})"
    assert reason in one.output()
    wait_for("the server's log", lambda: "event=revoked" in server.output())
    assert reason in server.output()
    assert [c["identity"] for c in bed.status(bed.gateway)["clients"]] == ["client2"]
    assert bed.ping(bed.clients["client2"], HOST, count=2) and two.alive()


def test_sighup_reloads_the_crl_even_when_its_stamp_did_not_change(
    bed: Testbed, pki: dict[str, Path]
) -> None:
    """The CRL is rewritten in place with the same size and mtime: only SIGHUP can see it."""
    crl = pki["crl"]
    crl.write_bytes(crl.read_bytes() + b"#" * 600 + b"\n")  # room to rewrite it in place
    server = start_server(bed, pki)
    one = start_client(bed, pki, "client1")
    wait_for("client1", lambda: connected(bed, bed.clients["client1"]))
    before = os.stat(crl)
    padded = crl.read_bytes()
    copy = shutil.copytree(pki["dir"], pki["dir"].with_name("copy"))  # the live CRL stays put
    fresh = pki_mod.revoke(copy, "client1").read_bytes()
    assert len(fresh) < len(padded)
    with open(crl, "r+b") as f:  # same inode, same size, then the old mtime back
        f.write(fresh + b"#" * (len(padded) - len(fresh) - 1) + b"\n")
    os.utime(crl, ns=(before.st_atime_ns, before.st_mtime_ns))
    time.sleep(2.5)  # the poll runs every second: it must not notice
    assert connected(bed, bed.clients["client1"]), "the poll should not have seen this change"
    server.popen.send_signal(signal.SIGHUP)  # `ip netns exec` execs: this is the server
    assert exits(one) == 2, one.output()
    assert "certificate revoked" in one.output()
    assert "event=crl_reloaded" in server.output() and server.alive()


def test_vpn_kill_ends_one_session_and_another_stays(bed: Testbed, pki: dict[str, Path]) -> None:
    server = start_server(bed, pki, crl=False)
    one = start_client(bed, pki, "client1")
    start_client(bed, pki, "client2")
    wait_for("client1", lambda: connected(bed, bed.clients["client1"]))
    wait_for("client2", lambda: connected(bed, bed.clients["client2"]))
    result = vpn("kill", "client1", ns=bed.gateway)
    assert result.returncode == 0, result.stderr
    assert "ended the session of client1" in result.stdout
    assert exits(one) == 2, one.output()
    assert "vpn kill" in one.output()
    assert "event=killed identity=client1" in server.output()
    assert [c["identity"] for c in bed.status(bed.gateway)["clients"]] == ["client2"]
    assert bed.ping(bed.clients["client2"], HOST, count=2)
    missing = vpn("kill", "ghost", ns=bed.gateway)
    assert missing.returncode == 1
    assert "no session for identity 'ghost' (connected: client2)" in missing.stderr


# -- 5: identity is bound to the certificate -------------------------------------------------------


def test_second_certificate_for_a_connected_cn_is_refused_and_the_first_keeps_its_tunnel(
    bed: Testbed, pki: dict[str, Path]
) -> None:
    pki_mod.issue(pki["dir"], "client1-twin", "client", common_name="client1")
    server = start_server(bed, pki)
    start_client(bed, pki, "client1")
    ns = bed.clients["client1"]
    first = wait_for("client1", lambda: connected(bed, ns))
    twin = start_client(bed, pki, "twin", cert="client1-twin")
    assert exits(twin) == 2, twin.output()
    reason = (
        f"identity client1 is connected with another certificate (serial {serial(pki['client1'])})"
    )
    assert reason in twin.output()
    assert reason in server.output() and "event=identity_conflict" in server.output()
    (row,) = bed.status(bed.gateway)["clients"]
    assert row["serial"] == serial(pki["client1"])
    assert row["address"] == first["address"].split("/")[0]
    assert bed.ping(ns, HOST, count=3)
    assert connected(bed, ns)["reconnects"] == 0


def test_the_same_certificate_reconnecting_replaces_the_live_session(
    bed: Testbed, pki: dict[str, Path]
) -> None:
    server = start_server(bed, pki)
    client = start_client(bed, pki, "client1")
    ns = bed.clients["client1"]
    wait_for("client1", lambda: connected(bed, ns))
    offload = bed.status(bed.gateway)["offload"]
    gateway = bed.add_client("raw")
    sock = _tls_to_gateway(bed, bed.clients["raw"], gateway, _client_context(pki, "client1"))
    hello = b'{"version": 1, "name": "client1", "features": [%s]}' % (
        b'"offload"' if offload else b""
    )
    sock.sendall(protocol.encode(protocol.MsgType.HELLO, hello))
    # the raw connection takes over; the real client hears BYE, reconnects and takes it back
    wait_for("the replacement", lambda: "replaced by a new connection" in server.output())
    wait_for("client1 to come back", lambda: (s := connected(bed, ns)) and s["reconnects"] >= 1)
    sock.settimeout(5)
    data = b""
    while b"replaced by a new connection" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    assert b"replaced by a new connection" in data
    sock.close()
    assert bed.ping(ns, HOST, count=2) and client.alive()


# -- 6: the control socket is for root and the owner only ------------------------------------------


def test_control_socket_refuses_other_users(bed: Testbed, pki: dict[str, Path]) -> None:
    server = start_server(bed, pki, crl=False)
    start_client(bed, pki, "client1")
    wait_for("client1", lambda: connected(bed, bed.clients["client1"]))
    for args in (("status", "--json"), ("kill", "client1")):
        result = vpn(*args, ns=bed.gateway, user=NOBODY)
        assert result.returncode == 1, result
        assert "refused: only root or uid 0 may use control socket" in result.stderr
        assert "client1" not in result.stdout
    assert "event=control_refused" in server.output() and "uid=65534" in server.output()
    assert connected(bed, bed.clients["client1"])
    assert vpn("status", ns=bed.gateway).returncode == 0  # root still may


SQUATTER = """
import socket, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind("\\0vpnlab-server"); s.listen()
print("bound", flush=True)
while True:
    c, _ = s.accept()
    try:
        c.sendall(b'{"ok": true, "status": {"role": "server", "clients": []}}\\n')
    except OSError:
        pass
    c.close()
"""


def test_a_squatted_control_name_is_neither_trusted_nor_silently_taken(
    bed: Testbed, pki: dict[str, Path]
) -> None:
    squatter = subprocess.Popen(
        ["ip", "netns", "exec", bed.gateway, *NOBODY, sys.executable, "-c", SQUATTER],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert squatter.stdout is not None and squatter.stdout.readline().strip() == "bound"
        status = vpn("status", "--control", "@vpnlab-server", ns=bed.gateway)
        assert status.returncode == 1, status
        assert "uid 65534" in status.stderr and "refusing to trust it" in status.stderr
        server = bed.spawn(bed.gateway, "server", server_args(pki))
        assert exits(server) == 1, server.output()
        text = server.output()
        assert "control socket @vpnlab-server is already bound by pid" in text, text
        assert "(uid 65534)" in text and "someone squats the name" in text and "--control" in text
    finally:
        squatter.kill()
        squatter.wait(5)


# -- 10: a broken CRL at reload -------------------------------------------------------------------


def test_garbage_crl_keeps_the_old_one_and_clients_still_connect(
    bed: Testbed, pki: dict[str, Path]
) -> None:
    server = start_server(bed, pki)
    start_client(bed, pki, "client1")
    wait_for("client1", lambda: connected(bed, bed.clients["client1"]))
    pki["crl"].write_bytes(b"this is not a CRL\n")
    time.sleep(1.5)  # the poll of every second has seen it; the next handshake sees it too
    start_client(bed, pki, "client2")
    wait_for("client2 to connect anyway", lambda: connected(bed, bed.clients["client2"]))
    wait_for("the log line", lambda: "event=crl_unreadable" in server.output())
    revoked = start_client(bed, pki, "bad", cert="revoked")
    assert exits(revoked) == 2, revoked.output()  # the old CRL is still enforced
    wait_for("the refusal", lambda: "certificate revoked: it is listed" in server.output())
    time.sleep(1.5)
    status = bed.status(bed.gateway)
    assert status["handshaking"] == 0
    assert sorted(c["identity"] for c in status["clients"]) == ["client1", "client2"]
    text = server.output()
    assert text.count("event=crl_unreadable") == 1, text
    line = next(x for x in text.splitlines() if "event=crl_unreadable" in x)
    assert "previous CRL stays in force" in line
    assert bed.ping(bed.clients["client1"], HOST) and server.alive()
