"""Three clients at once: each gets its own address and reaches every LAN host; whether they
reach each other is the server's choice — off by default (dropped and counted at the gateway),
on after a restart with --client-to-client, to which every client reconnects by itself."""

from __future__ import annotations

import ipaddress

from scenarios.lab_checks import lan_address
from scenarios.runner import Context, Result, Scenario
from scenarios.tunnel import Tunnel


def run(ctx: Context) -> None:
    backend = ctx.backend
    tunnel = Tunnel(backend)
    clients = tunnel.clients
    first, others = clients[0], clients[1:]
    lan = {host: lan_address(tunnel, host)[1] for host in tunnel.hosts}
    try:
        with ctx.step(f"{len(clients)} clients connected at once, each with its own address") as s:
            assert len(clients) >= 3, f"only {clients}: run with extra=('clients',)"
            server = tunnel.start_server()
            for client in clients:
                tunnel.start_client(client)
            addresses = {c: tunnel.wait_connected(c)["address"].split("/")[0] for c in clients}
            pool = ipaddress.ip_network(tunnel.pool)
            assert len(set(addresses.values())) == len(clients), addresses
            assert all(ipaddress.ip_address(a) in pool for a in addresses.values()), addresses
            s.detail = ", ".join(f"{c} {a}" for c, a in addresses.items())
            ctx.metric("clients_connected", len(addresses))

        with ctx.step("every client reaches every LAN host") as s:
            for client in clients:
                for host, address in lan.items():
                    ok, summary = tunnel.ping(client, address, count=2)
                    assert ok, f"{client} → {host} ({address}): {summary}"
            s.detail = f"{len(clients)} clients × {len(lan)} hosts, 2 pings each, all answered"

        target = others[0]
        with ctx.step(f"client-to-client off by default: {first} cannot reach {target}") as s:
            before = tunnel.status(tunnel.gateway.name)["totals"]["dropped_filtered"]
            ok, summary = tunnel.ping(first, addresses[target], count=2, timeout=1)
            assert not ok, f"{first} reached {target} ({addresses[target]}): {summary}"
            after = tunnel.status(tunnel.gateway.name)["totals"]["dropped_filtered"]
            assert after - before >= 2, f"server totals dropped_filtered {before} → {after}"
            s.detail = f"{summary}; server totals dropped_filtered {before} → {after}"
            ctx.metric("dropped_filtered", after - before)

        with ctx.step("server restarted with --client-to-client; every client comes back") as s:
            backend.stop(server, timeout=5)
            tunnel.start_server("--client-to-client", name="vpn-server-c2c")
            again = {c: tunnel.wait_connected(c, 30, reconnects=1) for c in clients}
            moved = {
                c: st["address"]
                for c, st in again.items()
                if st["address"].split("/")[0] != addresses[c]
            }
            assert not moved, f"addresses changed: {moved} (before: {addresses})"
            s.detail = ", ".join(f"{c} reconnects {st['reconnects']}" for c, st in again.items())
            s.detail += "; same addresses"

        with ctx.step("client-to-client on: every client reaches the others") as s:
            for client in clients:
                for peer in clients:
                    if peer != client:
                        ok, summary = tunnel.ping(client, addresses[peer], count=2)
                        assert ok, f"{client} → {peer} ({addresses[peer]}): {summary}"
            pairs = len(clients) * (len(clients) - 1)
            s.detail = f"{pairs} client pairs, 2 pings each, all answered through the gateway"
    finally:
        tunnel.stop_all()


def verify(result: Result) -> None:
    assert result.metrics["clients_connected"] >= 3
    assert result.metrics["dropped_filtered"] >= 2


SCENARIO = Scenario(
    name="multi-client",
    description="three clients: own addresses, all reach the LAN; client-to-client as configured",
    run=run,
    extra=("clients",),
    key_metric="clients_connected",
)
