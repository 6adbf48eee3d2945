"""Who may not in: while a good client (certificate and password) stays connected and pinging,
clients each wrong in exactly one way — a certificate from another CA, an expired one, a revoked
one, none at all, a wrong password — are refused with their reason in the server's log (the VPN
clients among them exit with status 2), and a gateway impostor with a valid lab certificate
under the wrong name is refused by the client.

One server serves every case: it requires passwords (--passwords), so the good client logs in as
USER, and so does every bad one but the wrong-password one: the fault under test is the only
one. The impostor is a second server on the gateway (its own port, TUN, control socket, pool).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

from lab.backends.base import Process
from scenarios.lab_checks import lan_address, put_file, run_json, wait_until
from scenarios.runner import Context, Result, Scenario
from scenarios.tunnel import Tunnel

USER, PASSWORD = "alice", "correct horse battery staple"
IMPOSTOR_TUN = "tun1"  # the real server has tun0 on the same gateway
REFUSED = 2  # exit status of a VPN client that was refused (or refused the gateway)

NO_CERT = r"""
import json, socket, ssl, sys
from vpn.credentials import tls
host, port, ca, name = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.load_verify_locations(ca)
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
ctx.set_alpn_protocols([tls.ALPN])
out = {}
with socket.create_connection((host, port), timeout=5) as raw:
    try:
        with ctx.wrap_socket(raw, server_hostname=name) as conn:
            out["handshake"] = "finished on our side (TLS 1.3: the server checks us after)"
            conn.settimeout(5)
            data = conn.recv(4096)
            out["read"] = f"{len(data)} bytes" if data else "connection closed"
    except (ssl.SSLError, OSError) as exc:
        out["error"] = tls.explain(exc)
print(json.dumps(out))
"""


def _new_text(read: Callable[[], str]) -> Callable[[], str]:
    """What read() returns beyond what it returns now."""
    start = len(read())
    return lambda: read()[start:]


def _reason(log: str, event: str) -> str:
    found = re.findall(rf'event={event} .*?reason="((?:[^"\\]|\\.)*)"', log)
    return found[-1] if found else ""


def _server_reason(new_log: Callable[[], str]) -> str:
    """The reason of the server's next auth_failed line."""
    return wait_until("the server's auth_failed line", lambda: _reason(new_log(), "auth_failed"))


def run(ctx: Context) -> None:
    backend = ctx.backend
    tunnel = Tunnel(backend)
    good, bad, other = tunnel.clients[:3]
    host = tunnel.hosts[0]
    _, target = lan_address(tunnel, host)
    passwords = backend.node_path(backend.workdir / "files" / "passwords")
    secret = put_file(backend, "alice.password", PASSWORD + "\n")
    wrong = put_file(backend, "wrong.password", "Tr0ub4dor&3\n")
    login = ("--user", USER, "--password-file", secret)

    def still_working(step_detail: str) -> str:
        ok, summary = tunnel.ping(good, target, count=2)
        assert ok, f"{good} lost the LAN: {summary}"
        return f"{step_detail}; {good} → {host}: {summary.split(',')[1].strip()}"

    def refused_client(name: str, *extra: str, cert: str, node: str = bad) -> tuple[str, str]:
        """Start a VPN client that must be refused; (its reason, the server's reason)."""
        server_log = _new_text(lambda: backend.logs(server))
        process: Process = tunnel.start_client(node, *extra, cert=cert, name=name)
        status = backend.wait(process, 30)
        log = backend.logs(process)
        assert status == REFUSED, f"{name} exited {status}, not {REFUSED}:\n{log[-1500:]}"
        return _reason(log, "refused"), _server_reason(server_log)

    try:
        with ctx.step(f"server requires passwords; {good} logs in as {USER} and pings") as step:
            backend.exec(
                tunnel.gateway.name,
                [*backend.vpn_argv(), "passwd", passwords, USER, "--password-stdin"],
                input=PASSWORD.encode() + b"\n",
                check=True,
            )
            server = tunnel.start_server("--passwords", passwords)
            tunnel.start_client(good, *login)
            status = tunnel.wait_connected(good)
            step.detail = still_working(f"{good} {status['address']}")

        cases = [
            ("rogue-client", "a certificate from another CA", "unknown ca"),
            ("expired", "an expired certificate", "expired"),
            ("revoked", "a revoked certificate", "revoked"),
        ]
        for cert, what, words in cases:
            with ctx.step(f"{what} ('{cert}') is refused") as step:
                client_says, server_says = refused_client(f"vpn-{cert}", *login, cert=cert)
                assert words in server_says.lower(), f"server: {server_says!r}"
                assert "gateway refused us" in client_says, f"client: {client_says!r}"
                step.detail = still_working(f"server: {server_says}; {cert} exits 2: {client_says}")

        with ctx.step("no certificate at all (a raw TLS client) is refused") as step:
            server_log = _new_text(lambda: backend.logs(server))
            args = (tunnel.server_address, str(tunnel.port), tunnel.path("ca"), tunnel.gateway.name)
            seen = run_json(backend, bad, "no-cert", NO_CERT, *args, timeout=30)
            assert "read" not in seen or seen["read"] == "connection closed", seen
            server_says = _server_reason(server_log)
            assert "certificate" in server_says.lower(), f"server: {server_says!r}"
            step.detail = still_working(f"server: {server_says}; the TLS client saw: {seen}")

        with ctx.step(f"a wrong password for {USER} is refused") as step:
            extra = ("--user", USER, "--password-file", wrong)
            client_says, server_says = refused_client("vpn-wrong-password", *extra, cert=bad)
            assert "wrong user name or password" in server_says, f"server: {server_says!r}"
            assert "wrong user name or password" in client_says, f"client: {client_says!r}"
            step.detail = still_working(f"server: {server_says}; client exits 2: {client_says}")

        with ctx.step(
            "a gateway impostor (lab CA, name 'impostor') is refused by the client"
        ) as step:
            pool = ipaddress.ip_network(tunnel.pool)
            spare = ipaddress.ip_network((int(pool.broadcast_address) + 1, pool.prefixlen))
            port = tunnel.port + 1
            impostor = tunnel.start_server(
                "--listen", f"0.0.0.0:{port}", "--tun", IMPOSTOR_TUN, "--pool", str(spare),
                "--control", "@vpnlab-impostor", name="vpn-impostor", server_cert="impostor",
            )  # fmt: skip
            process = tunnel.start_client(
                other, "--server", f"{tunnel.server_address}:{port}", *login, name="vpn-fooled"
            )
            status = backend.wait(process, 30)
            client_says = _reason(backend.logs(process), "refused")
            assert status == REFUSED, f"client exited {status}: {backend.logs(process)[-1500:]}"
            mismatch = f"server name mismatch: certificate is not valid for '{tunnel.gateway.name}'"
            assert mismatch in client_says, client_says
            assert "event=connect " not in backend.logs(impostor), "the impostor admitted it"
            impostor_says = _server_reason(lambda: backend.logs(impostor))
            step.detail = still_working(
                f"{other} exits 2: {client_says}; the impostor logged: {impostor_says}"
            )

        with ctx.step(f"{good} was never disturbed") as step:
            status = tunnel.status(good)
            assert status and status["state"] == "connected" and status["reconnects"] == 0, status
            connects = backend.logs(server).count("event=connect ")
            assert connects == 1, f"the server admitted {connects} clients, expected only {good}"
            step.detail = f"{good}: connected, reconnects 0; the server admitted only {good}"
            ctx.metric("refusals", len(cases) + 3)
    finally:
        tunnel.stop_all()


def verify(result: Result) -> None:
    assert result.metrics["refusals"] == 6


SCENARIO = Scenario(
    name="auth-reject",
    description="bad certificates, none, a wrong password, an impostor gateway: all refused",
    run=run,
    extra=("clients",),
    key_metric="refusals",
)
