"""The LAN's name server through the tunnel: dnsmasq on a LAN host answers for the LAN hosts'
names (their addresses read from the compose files), the gateway pushes it with --dns and
--dns-search, the client puts it in its own resolver file, resolves LAN names, and gives the
file back exactly as it was when it stops."""

from __future__ import annotations

import signal

from scenarios.lab_checks import lan_address
from scenarios.runner import Context, Scenario, Skipped
from scenarios.tunnel import Tunnel

DOMAIN = "lan"


def dnsmasq_argv(listen: str, records: dict[str, str]) -> list[str]:
    return [
        "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
        f"--listen-address={listen}", "--bind-interfaces", "--pid-file=", "--user=root",
        "--log-facility=-", "--log-queries",
        *(f"--host-record={name}.{DOMAIN},{address}" for name, address in records.items()),
    ]  # fmt: skip


def resolve(ctx: Context, node: str, name: str) -> str:
    """The first IPv4 address `getent` finds for name on node, or ''."""
    result = ctx.backend.exec(node, ["getent", "ahostsv4", name], timeout=15)
    return result.stdout.split()[0] if result.returncode == 0 and result.stdout.strip() else ""


def run(ctx: Context) -> None:
    backend = ctx.backend
    tunnel = Tunnel(backend)
    client = tunnel.clients[0]
    records = {host: lan_address(tunnel, host)[1] for host in tunnel.hosts}
    server_host = tunnel.hosts[0]
    name_server = records[server_host]
    if backend.exec(server_host, ["sh", "-c", "command -v dnsmasq"]).returncode != 0:
        raise Skipped(
            f"no dnsmasq on {server_host}: scripts/deps.sh / images/base add dnsmasq-base"
        )
    try:
        with ctx.step(f"dnsmasq on {server_host} answers for the LAN") as step:
            dns = backend.spawn(server_host, dnsmasq_argv(name_server, records), name="dnsmasq")
            tunnel.processes["dnsmasq"] = dns
            tunnel.wait_log(dns, "started", "dnsmasq to start")
            step.detail = ", ".join(f"{n}.{DOMAIN} → {a}" for n, a in records.items())
        with ctx.step(f"{client}'s resolver before the tunnel") as step:
            tunnel.private_resolver(client)
            before = backend.ensure(client, ["cat", "/etc/resolv.conf"])
            assert not resolve(ctx, client, f"{server_host}.{DOMAIN}"), "resolved without tunnel"
            step.detail = f"{len(before.splitlines())} lines; {server_host}.{DOMAIN} unknown"
        with ctx.step(f"gateway pushes {name_server}, search {DOMAIN}; {client} connected") as s:
            tunnel.start_server("--dns", name_server, "--dns-search", DOMAIN)
            vpn = tunnel.start_client(client)
            status = tunnel.wait_connected(client)
            assert status["dns"] == [name_server], f"client status: dns {status['dns']}"
            now = backend.ensure(client, ["cat", "/etc/resolv.conf"])
            assert f"nameserver {name_server}" in now, now
            s.detail = f"{client} resolv.conf: " + "; ".join(
                line for line in now.splitlines() if not line.startswith("#")
            )
        with ctx.step("LAN names resolve through the tunnel") as step:
            found = {name: resolve(ctx, client, f"{name}.{DOMAIN}") for name in records}
            assert found == records, f"resolved {found}, expected {records}"
            short = resolve(ctx, client, tunnel.hosts[-1])
            assert short == records[tunnel.hosts[-1]], f"{tunnel.hosts[-1]} (search): {short!r}"
            step.detail = ", ".join(f"{n}.{DOMAIN} {a}" for n, a in found.items())
            step.detail += f"; '{tunnel.hosts[-1]}' through the search domain"
            ctx.metric("names_resolved", len(found) + 1)
        with ctx.step(f"{client} stopped (SIGTERM): its resolver is back, byte for byte") as step:
            backend.signal(vpn, signal.SIGTERM)
            assert backend.wait(vpn, 10) == 0, "the client did not exit cleanly"
            after = backend.ensure(client, ["cat", "/etc/resolv.conf"])
            assert after == before, f"resolv.conf now:\n{after}\nbefore:\n{before}"
            step.detail = "identical to the file before the tunnel"
    finally:
        tunnel.stop_all()


SCENARIO = Scenario(
    name="dns",
    description="the LAN's name server through the tunnel; the client's resolver restored after",
    run=run,
    key_metric="names_resolved",
)
