"""The lab's first step, before any tunnel: each side reaches the gateway, and nothing crosses
it — the client cannot reach the LAN, nor the LAN the client."""

from __future__ import annotations

from scenarios.lab_faults import address
from scenarios.probes import ping
from scenarios.runner import Context, Result, Scenario
from scenarios.tunnel import nodes_with_role


def run(ctx: Context) -> None:
    backend = ctx.backend
    (gateway,) = (n.name for n in nodes_with_role(backend, "gateway"))
    client = nodes_with_role(backend, "client")[0].name
    hosts = [n.name for n in nodes_with_role(backend, "host")]
    internet = backend.topology.node(client).networks[0]

    with ctx.step(f"{client} ↔ {gateway} on the {internet} network") as step:
        there = ping(backend, client, address(backend, gateway, internet), count=3)
        assert there.ok, f"{client} → {gateway}: {there.output}"
        back = ping(backend, gateway, address(backend, client, internet), count=3)
        assert back.ok, f"{gateway} → {client}: {back.output}"
        step.detail = f"both ways answered, rtt {there.rtt_avg_ms} ms"
        ctx.metric("client_gateway_rtt_ms", there.rtt_avg_ms)

    with ctx.step(f"{gateway} ↔ each LAN host") as step:
        for host in hosts:
            there = ping(backend, gateway, address(backend, host), count=2)
            assert there.ok, f"{gateway} → {host}: {there.output}"
            back = ping(backend, host, address(backend, gateway), count=2)
            assert back.ok, f"{host} → {gateway}: {back.output}"
        step.detail = f"{len(hosts)} hosts answer the gateway and reach it"

    with ctx.step(f"{client} cannot reach any LAN host without a tunnel") as s:
        blocked = 0
        for host in hosts:
            seen = ping(backend, client, address(backend, host), count=2, wait=1)
            assert seen.received == 0, f"{host} answered {client} without a tunnel: {seen.output}"
            blocked += 1
        route = backend.exec(client, ["ip", "route", "get", address(backend, hosts[0])])
        why = (route.stdout or route.stderr).strip().splitlines()[0]
        s.detail = f"{blocked}/{len(hosts)} hosts silent; `ip route get`: {why}"
        ctx.metric("client_to_lan_blocked", f"{blocked}/{len(hosts)}")

    with ctx.step(f"no LAN host reaches {client}") as step:
        for host in hosts:
            seen = ping(backend, host, address(backend, client, internet), count=2, wait=1)
            assert seen.received == 0, f"{client} answered {host} without a tunnel: {seen.output}"
        step.detail = f"{len(hosts)} hosts: no answer from {address(backend, client, internet)}"


def verify(result: Result) -> None:
    blocked, total = result.metrics["client_to_lan_blocked"].split("/")
    assert blocked == total and int(total) > 0, result.metrics


SCENARIO = Scenario(
    name="reachability-baseline",
    description="before any tunnel: client ↔ gateway ↔ LAN works, client ↔ LAN does not",
    run=run,
    key_metric="client_to_lan_blocked",
)
