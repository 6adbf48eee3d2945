"""A LAN host with no default route: the client's pings reach it through the tunnel, but it has
no way back to the VPN pool — until it gets one specific route, via the gateway."""

from __future__ import annotations

from scenarios.lab_faults import address, tunnel_up, vpn_address
from scenarios.pcap import judge
from scenarios.probes import ping
from scenarios.runner import Context, Result, Scenario

COUNT = 3


def run(ctx: Context) -> None:
    with tunnel_up(ctx) as up:
        backend, tunnel, client, control = up.backend, up.tunnel, up.client, up.host
        host = tunnel.hosts[1]
        target = address(backend, host)
        me = vpn_address(up.status)
        with ctx.step(f"{host} has neither a default route nor one to the pool") as step:
            for route in ("default", tunnel.pool):
                if backend.ensure(host, ["ip", "-4", "route", "show", route]).strip():
                    backend.ensure(host, ["ip", "-4", "route", "del", route])
            left = backend.ensure(host, ["ip", "-4", "route", "show"]).strip().splitlines()
            back = backend.exec(host, ["ip", "route", "get", me])
            assert back.returncode != 0, f"{host} still routes {me}: {back.stdout.strip()}"
            step.detail = f"routes left: {'; '.join(left)}; to {me}: {back.stderr.strip()}"

        with ctx.step(f"{client}'s pings reach {host}, which cannot answer") as step:
            with backend.capture("lan", f"no-default-route-{backend.name}", "icmp") as capture:
                seen = ping(backend, client, target, count=COUNT, wait=1)
                near = ping(backend, client, address(backend, control), count=1)
            assert seen.received == 0, f"{host} answered without a route: {seen.output}"
            assert near.ok, f"{control}, which keeps its route, did not answer: {near.output}"
            others = judge(capture.path, tunnel.port, {}).others
            requests = others.count(f"ICMP {me} → {target}")
            replies = others.count(f"ICMP {target} → {me}")
            assert requests >= COUNT and replies == 0, f"on the LAN: {others}"
            step.detail = (
                f"{requests} echo requests arrived on the LAN, {replies} replies; "
                f"{control} (with its route) answers"
            )
            ctx.metric("requests_without_route", requests)
            ctx.metric("replies_without_route", replies)

        gateway = address(backend, tunnel.gateway.name)
        with ctx.step(f"{host} gets a route to {tunnel.pool} via {gateway}, and answers") as step:
            backend.ensure(host, ["ip", "route", "add", tunnel.pool, "via", gateway])
            seen = ping(backend, client, target, count=COUNT)
            assert seen.ok, seen.output
            step.detail = f"{seen.summary}; still no default route"
            ctx.metric("answered_with_route", f"{seen.received}/{seen.transmitted}")


def verify(result: Result) -> None:
    assert result.metrics["replies_without_route"] == 0
    assert result.metrics["requests_without_route"] >= COUNT
    assert result.metrics["answered_with_route"] == f"{COUNT}/{COUNT}"


SCENARIO = Scenario(
    name="no-default-route",
    description="a LAN host without a default route answers only once it routes the pool",
    run=run,
    key_metric="answered_with_route",
)
