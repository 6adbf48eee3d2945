"""Site to site: a second site's router is a VPN client, and the server routes that site's
network to it (client subnet). Hosts of both sites reach each other through the tunnel only,
and no other client may use the site's addresses. Where the lab is dual-stack and the gateway
has a pool6, the site's IPv6 subnet is a client subnet too: the sites meet over IPv6 as well,
no other client may use the site's IPv6 addresses, and the router may not use IPv6 sources
outside its site."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from lab.backends.base import Backend
from scenarios.lab_faults import address, connect
from scenarios.pcap import judge
from scenarios.probes import ping
from scenarios.runner import Context, Result, Scenario
from scenarios.tunnel import NO_IPV6, Tunnel, nodes_with_role
from vpn.credentials import pki

PATTERN = "517e2517e2"  # ping payload: seen on the internet segment only if the tunnel leaks
OUTSIDE6 = "2001:db8::53"  # documentation prefix: in no subnet of the lab, the router's or any


def run(ctx: Context) -> None:
    backend = ctx.backend
    tunnel = Tunnel(backend)
    (router,) = nodes_with_role(backend, "site-router")
    site = router.labels["vpnlab.vpn.subnets"]
    subnet = str(backend.topology.network(site).subnet)
    host_a, host_b = (n.name for n in nodes_with_role(backend, "site-host"))
    client, lan_host = tunnel.clients[0], tunnel.hosts[0]
    gateway = address(backend, tunnel.gateway.name)
    # The site's IPv6 subnet, where the lab is dual-stack and the VPN has a pool6.
    subnet6_net = backend.topology.network(site).subnet6 if tunnel.pool6 else None
    subnet6 = str(subnet6_net) if subnet6_net else ""
    gateway6 = str(tunnel.gateway.attachment("lan").address6 or "")
    subnets = [subnet, subnet6] if subnet6 else [subnet]

    with ctx.step(f"{router.name} gets a client certificate from the lab CA") as step:
        cert, _ = pki.issue(Path(tunnel.pki["dir"]), router.name, "client")
        step.detail = f"{cert.name}, signed by {Path(tunnel.pki['ca']).name}"
    with ctx.step(f"LAN hosts route {site} ({subnet}) via the gateway {gateway}") as step:
        for host in tunnel.hosts:
            backend.ensure(host, ["ip", "route", "replace", subnet, "via", gateway])
        step.detail = ", ".join(tunnel.hosts)
    if subnet6:
        with ctx.step(f"LAN hosts route {site} ({subnet6}) via the gateway {gateway6}") as step:
            for host in tunnel.hosts:
                backend.ensure(host, ["ip", "-6", "route", "replace", subnet6, "via", gateway6])
            step.detail = ", ".join(tunnel.hosts)
    try:
        flags = [arg for s in subnets for arg in ("--client-subnet", f"{router.name}={s}")]
        connect(ctx, tunnel, client, router.name, server_flags=flags)
        with ctx.step(f"the server routes {' and '.join(subnets)} to {router.name}") as step:
            rows = {c["identity"]: c for c in server_clients(tunnel)}
            assert rows[router.name]["subnets"] == subnets, rows[router.name]
            if subnet6:
                assert rows[router.name].get("address6"), f"no IPv6 lease: {rows[router.name]}"
            own = " ".join(
                filter(None, (rows[router.name]["address"], rows[router.name].get("address6")))
            )
            step.detail = f"{router.name} at {own} + {' + '.join(subnets)}"

        far_a, lan_b = address(backend, host_a, site), address(backend, host_b, site)
        near = address(backend, lan_host)
        with backend.capture(tunnel.network, f"site-to-site-{backend.name}") as capture:
            with ctx.step(f"{host_a} ({far_a}) pings {lan_host} ({near})") as step:
                seen = ping(backend, host_a, near, "-p", PATTERN, count=3)
                assert seen.ok, seen.output
                step.detail = f"{seen.summary}, rtt {seen.rtt_avg_ms} ms"
            with ctx.step(f"{lan_host} ({near}) pings {host_b} ({lan_b})") as step:
                seen = ping(backend, lan_host, lan_b, "-p", PATTERN, count=3)
                assert seen.ok, seen.output
                step.detail = f"{seen.summary}, rtt {seen.rtt_avg_ms} ms"
                ctx.metric("site_rtt_ms", seen.rtt_avg_ms)
            if subnet6:
                far_a6, lan_b6 = address6(backend, host_a, site), address6(backend, host_b, site)
                near6 = address6(backend, lan_host)
                with ctx.step(f"{host_a} ({far_a6}) pings {lan_host} ({near6}) over IPv6") as step:
                    seen = ping(backend, host_a, near6, "-6", "-p", PATTERN, count=3)
                    assert seen.ok, seen.output
                    step.detail = f"{seen.summary}, rtt {seen.rtt_avg_ms} ms"
                with ctx.step(f"{lan_host} ({near6}) pings {host_b} ({lan_b6}) over IPv6") as step:
                    seen = ping(backend, lan_host, lan_b6, "-6", "-p", PATTERN, count=3)
                    assert seen.ok, seen.output
                    step.detail = f"{seen.summary}, rtt {seen.rtt_avg_ms} ms"
                    ctx.metric("site_rtt6_ms", seen.rtt_avg_ms)
        if not subnet6:
            ctx.skip("the sites meet over IPv6", NO_IPV6)
        with ctx.step("between the sites, only TLS crossed the internet") as step:
            secrets = {"ping payload": bytes.fromhex(PATTERN) * 2}
            for name, where in ((host_a, far_a), (host_b, lan_b), (lan_host, near)):
                secrets[f"{name}'s address"] = ipaddress.IPv4Address(where).packed
            if subnet6:
                for name, where in ((host_a, far_a6), (host_b, lan_b6), (lan_host, near6)):
                    secrets[f"{name}'s IPv6 address"] = ipaddress.IPv6Address(where).packed
            verdict = judge(capture.path, tunnel.port, secrets)
            assert verdict.tls > 0, f"no TLS segments captured ({verdict.packets} packets)"
            assert not verdict.others, f"not tunnelled: {', '.join(verdict.others[:5])}"
            assert not verdict.leaks, "; ".join(verdict.leaks)
            step.detail = f"{verdict.tls} TLS segments, no inner address or payload in clear"
            ctx.metric("tls_segments", verdict.tls)

        spoof = str(ipaddress.ip_network(subnet)[-2])  # in the site, but no node's address
        with ctx.step(f"{client} sending from {spoof} (in {site}) is dropped as spoofed") as step:
            grew, step.detail = spoofed(tunnel, client, spoof, near, router.name)
            ctx.metric("dropped_spoofed", grew)
        if subnet6:
            spoof6 = str(ipaddress.ip_network(subnet6)[-2])
            with ctx.step(
                f"{client} sending from {spoof6} (in {site}) is dropped as spoofed"
            ) as step:
                grew, step.detail = spoofed(tunnel, client, spoof6, near6, router.name)
                ctx.metric("dropped_spoofed6", grew)
            with ctx.step(
                f"{router.name} sending from {OUTSIDE6} (outside {site}) is dropped"
            ) as step:
                grew, step.detail = spoofed(tunnel, router.name, OUTSIDE6, near6, client)
                ctx.metric("dropped_spoofed6_router", grew)
        else:
            ctx.skip("IPv6 sources outside a client's own are dropped as spoofed", NO_IPV6)
    finally:
        tunnel.stop_all()


def spoofed(
    tunnel: Tunnel, sender: str, source: str, target: str, bystander: str
) -> tuple[int, str]:
    """sender pings target from source, an address that is not its own: nothing answers, the
    gateway counts every echo in the sender's dropped_spoofed, and none in the bystander's.
    (How many it counted, the step's detail.)"""
    backend = tunnel.backend
    family = "-6" if ipaddress.ip_address(source).version == 6 else "-4"
    before = {c["identity"]: c["dropped_spoofed"] for c in server_clients(tunnel)}
    prefix = "128" if family == "-6" else "32"
    extra = ["nodad"] if family == "-6" else []
    backend.ensure(
        sender, ["ip", family, "address", "add", f"{source}/{prefix}", "dev", "lo", *extra]
    )
    seen = ping(backend, sender, target, family, "-I", source, count=3, wait=1)
    after = {c["identity"]: c["dropped_spoofed"] for c in server_clients(tunnel)}
    grew = after[sender] - before[sender]
    assert seen.received == 0, f"{target} answered a spoofed source: {seen.output}"
    assert grew >= seen.transmitted > 0, f"dropped_spoofed {before} → {after}"
    assert after[bystander] == before[bystander], f"{bystander}'s drops {before} → {after}"
    detail = (
        f"{seen.transmitted} pings sent, none answered; {sender}'s dropped_spoofed +{grew}, "
        f"{bystander}'s unchanged"
    )
    return grew, detail


def address6(backend: Backend, node: str, network: str = "lan") -> str:
    return str(backend.topology.node(node).attachment(network).address6)


def server_clients(tunnel: Tunnel) -> list[dict[str, Any]]:
    status = tunnel.status(tunnel.gateway.name)
    assert status, "vpn status on the gateway did not answer"
    return status["clients"]


def verify(result: Result) -> None:
    assert result.metrics["dropped_spoofed"] >= 3, result.metrics
    for key in ("dropped_spoofed6", "dropped_spoofed6_router"):
        assert result.metrics.get(key, 3) >= 3, result.metrics
    assert result.metrics["tls_segments"] > 0


SCENARIO = Scenario(
    name="site-to-site",
    description="a second site behind a client router: both sites meet through the tunnel, "
    "over IPv4 and IPv6",
    run=run,
    extra=("site2",),
    key_metric="site_rtt_ms",
)
