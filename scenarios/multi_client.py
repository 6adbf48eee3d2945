"""Three clients at once: each gets its own address and reaches every LAN host; whether they
reach each other is the server's choice — off by default (dropped and counted at the gateway),
on after a restart with --client-to-client, to which every client reconnects by itself. Where
the lab is dual-stack and the gateway has a pool6, each client also gets its own IPv6 address
from it, reaches every LAN host over IPv6, and keeps that address when it reconnects."""

from __future__ import annotations

import ipaddress

from scenarios.lab_checks import lan_address
from scenarios.runner import Context, Result, Scenario
from scenarios.tunnel import NO_IPV6, Tunnel


def run(ctx: Context) -> None:
    backend = ctx.backend
    tunnel = Tunnel(backend)
    clients = tunnel.clients
    first, others = clients[0], clients[1:]
    lan = {host: lan_address(tunnel, host)[1] for host in tunnel.hosts}
    # The hosts' IPv6 addresses on that network, where the lab is dual-stack with a pool6.
    lan6 = {
        host: str(address)
        for host in tunnel.hosts
        for address in [
            backend.topology.node(host).attachment(lan_address(tunnel, host)[0]).address6
        ]
        if address and tunnel.pool6
    }
    try:
        with ctx.step(f"{len(clients)} clients connected at once, each with its own address") as s:
            assert len(clients) >= 3, f"only {clients}: run with extra=('clients',)"
            server = tunnel.start_server()
            for client in clients:
                tunnel.start_client(client)
            statuses = {c: tunnel.wait_connected(c) for c in clients}
            addresses = {c: st["address"].split("/")[0] for c, st in statuses.items()}
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

        addresses6: dict[str, str] = {}
        if lan6:
            with ctx.step(f"each client has its own IPv6 address from {tunnel.pool6}") as s:
                addresses6 = {c: st.get("address6", "").split("/")[0] for c, st in statuses.items()}
                assert all(addresses6.values()), f"a client without address6: {addresses6}"
                pool6 = ipaddress.ip_network(tunnel.pool6)
                assert len(set(addresses6.values())) == len(clients), addresses6
                assert all(ipaddress.ip_address(a) in pool6 for a in addresses6.values()), (
                    addresses6
                )
                s.detail = ", ".join(f"{c} {a}" for c, a in addresses6.items())
                ctx.metric("clients_with_address6", len(addresses6))
            with ctx.step("every client reaches every LAN host over IPv6") as s:
                for client in clients:
                    for host, address in lan6.items():
                        ok, summary = tunnel.ping(client, address, count=2)
                        assert ok, f"{client} → {host} ({address}): {summary}"
                s.detail = (
                    f"{len(clients)} clients × {len(lan6)} hosts, 2 IPv6 pings each, all answered"
                )
        else:
            ctx.skip("each client has its own IPv6 address, reaches the LAN over IPv6", NO_IPV6)

        target = others[0]
        with ctx.step(f"client-to-client off by default: {first} cannot reach {target}") as s:
            before = tunnel.status(tunnel.gateway.name)["totals"]["dropped_filtered"]
            ok, summary = tunnel.ping(first, addresses[target], count=2, timeout=1)
            assert not ok, f"{first} reached {target} ({addresses[target]}): {summary}"
            after = tunnel.status(tunnel.gateway.name)["totals"]["dropped_filtered"]
            assert after - before >= 2, f"server totals dropped_filtered {before} → {after}"
            s.detail = f"{summary}; server totals dropped_filtered {before} → {after}"
            ctx.metric("dropped_filtered", after - before)

        if addresses6:
            peer6 = addresses6[target]
            with ctx.step(f"client-to-client off covers IPv6: {first} cannot reach {peer6}") as s:
                before = tunnel.status(tunnel.gateway.name)["totals"]["dropped_filtered"]
                ok, summary = tunnel.ping(first, peer6, count=2, timeout=1)
                assert not ok, f"{first} reached {target} ({peer6}): {summary}"
                after = tunnel.status(tunnel.gateway.name)["totals"]["dropped_filtered"]
                assert after - before >= 2, f"server totals dropped_filtered {before} → {after}"
                s.detail = f"{summary}; server totals dropped_filtered {before} → {after}"
                ctx.metric("dropped_filtered6", after - before)

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

        if addresses6:
            with ctx.step("IPv6 leases are stable: every client comes back with its address6") as s:
                moved6 = {
                    c: st.get("address6")
                    for c, st in again.items()
                    if st.get("address6", "").split("/")[0] != addresses6[c]
                }
                assert not moved6, f"IPv6 addresses changed: {moved6} (before: {addresses6})"
                s.detail = ", ".join(f"{c} {again[c]['address6']}" for c in clients)

        with ctx.step("client-to-client on: every client reaches the others") as s:
            for client in clients:
                for peer in clients:
                    if peer != client:
                        ok, summary = tunnel.ping(client, addresses[peer], count=2)
                        assert ok, f"{client} → {peer} ({addresses[peer]}): {summary}"
            pairs = len(clients) * (len(clients) - 1)
            s.detail = f"{pairs} client pairs, 2 pings each, all answered through the gateway"

        if addresses6:
            with ctx.step("client-to-client on: every client reaches the others over IPv6") as s:
                for client in clients:
                    for peer in clients:
                        if peer != client:
                            ok, summary = tunnel.ping(client, addresses6[peer], count=2)
                            assert ok, f"{client} → {peer} ({addresses6[peer]}): {summary}"
                pairs = len(clients) * (len(clients) - 1)
                s.detail = f"{pairs} client pairs, 2 IPv6 pings each, all answered"
    finally:
        tunnel.stop_all()


def verify(result: Result) -> None:
    assert result.metrics["clients_connected"] >= 3
    assert result.metrics["dropped_filtered"] >= 2
    assert result.metrics.get("clients_with_address6", 3) >= 3, result.metrics


SCENARIO = Scenario(
    name="multi-client",
    description="three clients: own IPv4 and IPv6 addresses, all reach the LAN; client-to-client "
    "as configured",
    run=run,
    extra=("clients",),
    key_metric="clients_connected",
)
