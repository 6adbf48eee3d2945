"""Pre-authentication limits on the real server in namespaces: idle-connection floods, file
descriptor exhaustion, password guessing and hostile HELLOs. In each, a genuine client keeps
working (or gets in once the flood is gone).

Connection counts and waits are bounded; every namespace is removed by the `bed` fixture.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import procfs
from tests.netns.harness import (
    HOST,
    Testbed,
    VpnProcess,
    client_args,
    connected,
    server_args,
    wait_for,
)
from tests.netns.test_vpn import (  # the fixtures and helpers of the end-to-end tests
    _client_context,
    _read_error,
    _tls_to_gateway,
    pki,
    start_client,
    start_server,
)
from vpn import protocol

__all__ = ["pki"]  # fixtures, used by name

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="needs root for network namespaces and TUN devices (run as root: sudo make test)",
)


def open_idle(ns: str, address: str, count: int) -> list[socket.socket]:
    """`count` plain TCP connections to the gateway from inside ns, sending nothing."""
    from pyroute2 import netns as pr_netns

    box: dict[str, object] = {"socks": []}

    def connect() -> None:
        try:
            pr_netns.setns(ns, flags=0)
            for _ in range(count):
                s = socket.socket()
                s.settimeout(5)
                # A reset may beat connect() back to a busy caller: closed by the server all the
                # same, and kept so that closed_by_server counts it (a closed socket polls HUP).
                with contextlib.suppress(ConnectionResetError):
                    s.connect((address, 4433))
                box["socks"].append(s)  # type: ignore[attr-defined]
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=connect)
    thread.start()
    thread.join(60)
    socks: list[socket.socket] = box["socks"]  # type: ignore[assignment]
    if "error" in box:
        for s in socks:
            s.close()
        raise box["error"]  # type: ignore[misc]
    return socks


def closed_by_server(socks: list[socket.socket], wait: float) -> set[socket.socket]:
    """The sockets the server closed (EOF or reset) within `wait` seconds."""
    readable, _, _ = select.select(socks, [], [], wait)
    deadline = time.monotonic() + wait
    gone = set(readable)
    while time.monotonic() < deadline:  # select returns on the first; let the rest arrive
        more, _, _ = select.select([s for s in socks if s not in gone], [], [], 0.2)
        gone.update(more)
    for s in gone:
        s.setblocking(False)
        with contextlib.suppress(OSError):  # reset, or never connected (reset during connect)
            assert s.recv(1) == b"", "the server must not send anything to an idle connection"
    return gone


@pytest.fixture
def idle() -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    yield socks
    for s in socks:
        s.close()


def test_idle_connections_over_the_per_source_cap_are_closed_at_once(
    bed: Testbed, pki: dict[str, Path], idle: list[socket.socket]
) -> None:
    server = start_server(bed, pki, "--max-pending-per-source", "8", "--handshake-timeout", "30")
    flood = bed.add_client("flood")
    idle += open_idle(bed.clients["flood"], flood, 40)
    gone = closed_by_server(idle, 2.0)
    assert len(gone) == 32, f"{len(gone)} of 40 closed; the cap is 8 per source"
    admission = bed.status(bed.gateway)["admission"]
    assert admission["refused_per_source"] == 32, admission
    assert admission["pending"] == 8, admission
    start_client(bed, pki, "client1")
    ns = bed.clients["client1"]
    wait_for("client1 to connect past the flood", lambda: connected(bed, ns))
    assert bed.ping(ns, HOST, count=2)
    still = [s for s in idle if s not in gone]
    assert not select.select(still, [], [], 0)[0], "the 8 within the cap stay open"
    assert server.output().count("event=refused_pending") <= 2, "refusals are logged rate-limited"


def spawn_limited(bed: Testbed, ns: str, name: str, args: list[str], nofile: int) -> VpnProcess:
    """Like Testbed.spawn, with the server's file descriptors capped by prlimit."""
    log = bed.workdir / f"{name}.log"
    argv = ["ip", "netns", "exec", ns, "prlimit", f"--nofile={nofile}:{nofile}"]
    argv += [sys.executable, "-m", "vpn", *args]
    with log.open("ab") as out:
        popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    process = VpnProcess(ns, argv, log, popen)
    bed.processes.append(process)
    return process


def test_out_of_file_descriptors_the_server_pauses_instead_of_spinning(
    bed: Testbed, pki: dict[str, Path], idle: list[socket.socket]
) -> None:
    args = server_args(pki, "--max-pending", "1000", "--max-pending-per-source", "1000")
    args += ["--handshake-timeout", "30"]
    server = spawn_limited(bed, bed.gateway, "server", args, nofile=64)
    wait_for("listening", lambda: "event=listening" in server.output() or not server.alive())
    assert server.alive(), server.output()
    flood = bed.add_client("flood")
    idle += open_idle(bed.clients["flood"], flood, 100)  # the kernel's backlog holds the rest
    time.sleep(0.5)
    pid = server.popen.pid
    before = procfs.cpu_seconds(pid)
    time.sleep(2.0)
    after = procfs.cpu_seconds(pid)
    assert before is not None and after is not None
    used = after - before
    text = server.output()
    accept_lines = text.count("event=accept_paused") + text.count("event=accept_failed")
    print(f"server CPU over 2 s with descriptors exhausted: {used:.2f} s; {accept_lines} lines")
    assert used < 0.4, f"the server used {used:.2f} s of CPU in 2 s: the accept loop spins"
    assert 1 <= accept_lines <= 5, f"{accept_lines} accept log lines"
    for s in idle:
        s.close()
    idle.clear()
    start_client(bed, pki, "client1")
    ns = bed.clients["client1"]
    wait_for("client1 to connect once the flood is gone", lambda: connected(bed, ns), timeout=20)
    assert bed.ping(ns, HOST, count=2)
    admission = bed.status(bed.gateway)["admission"]
    assert admission["accept_paused"] >= 1, admission


def _passwd(path: Path, user: str, secret: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "vpn", "passwd", str(path), user, "--password-stdin"],
        input=secret + "\n", text=True, check=True, capture_output=True,
    )  # fmt: skip


def test_password_guessing_is_throttled_while_others_log_in(
    bed: Testbed, pki: dict[str, Path], tmp_path: Path
) -> None:
    passwords = tmp_path / "passwd"
    _passwd(passwords, "alice", "correct horse")
    _passwd(passwords, "bob", "battery staple")
    server = start_server(
        bed, pki, "--passwords", str(passwords), "--login-failures", "3", "--login-backoff", "30"
    )
    wrong, right = tmp_path / "wrong", tmp_path / "right"
    wrong.write_text("guess\n")
    right.write_text("battery staple\n")
    gateway = bed.add_client("guesser")
    ns = bed.clients["guesser"]
    guess = ["--user", "alice", "--password-file", str(wrong)]
    for attempt in range(3):
        run = bed.spawn(ns, f"guess{attempt}", client_args(pki["dir"], "client2", gateway, *guess))
        assert run.popen.wait(20) == 2, run.output()
        assert "wrong user name or password" in run.output()
    throttled = bed.spawn(ns, "guess3", client_args(pki["dir"], "client2", gateway, *guess))
    wait_for(
        "a throttled refusal",
        lambda: (bed.status(bed.gateway) or {}).get("admission", {}).get("auth_throttled", 0) >= 2,
    )
    assert "too many failed logins for user 'alice'" in throttled.output(), throttled.output()
    assert "retry in" in throttled.output()
    start_client(bed, pki, "client1", "--user", "bob", "--password-file", str(right))
    good = bed.clients["client1"]
    wait_for("bob to log in meanwhile", lambda: connected(bed, good))
    assert bed.ping(good, HOST, count=2)
    throttled.stop()
    admission = bed.status(bed.gateway)["admission"]
    assert admission["auth_refused"] == 3, "throttled attempts never reach the password check"
    assert admission["auth_throttled"] >= 2, admission
    assert "event=auth_throttled" in server.output()
    assert "too many failed logins for user 'alice' from 10.201.1.2" in server.output()


@pytest.mark.parametrize(
    ("hello", "reason"),
    [
        (b"[" * 8000, "nested deeper"),
        (b'{"version":' + b"1" * 5000 + b"}", "number too long"),
        (b'{"version":1,"name":"\xff"}', "not UTF-8"),
    ],
    ids=["deep", "long-number", "not-utf8"],
)
def test_hostile_hello_gets_an_error_frame_while_a_client_works(
    bed: Testbed, pki: dict[str, Path], hello: bytes, reason: str
) -> None:
    server = start_server(bed, pki)
    start_client(bed, pki, "client1")
    good = bed.clients["client1"]
    wait_for("client1", lambda: connected(bed, good))
    gateway = bed.add_client("raw")
    sock = _tls_to_gateway(bed, bed.clients["raw"], gateway, _client_context(pki, "client2"))
    sock.sendall(protocol.encode(protocol.MsgType.HELLO, hello))
    assert reason in _read_error(sock)
    sock.close()
    wait_for("the server's log line", lambda: reason in server.output())
    assert "Traceback" not in server.output()
    assert bed.ping(good, HOST, count=2)
    assert server.alive()
