"""Site to site: a second site's router is a VPN client, and the server routes that site's
network to it (client subnet). Hosts of both sites reach each other through the tunnel only,
and no other client may use the site's addresses."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from scenarios.lab_faults import address, connect
from scenarios.pcap import judge
from scenarios.probes import ping
from scenarios.runner import Context, Result, Scenario
from scenarios.tunnel import Tunnel, nodes_with_role
from vpn.credentials import pki

PATTERN = "517e2517e2"  # ping payload: seen on the internet segment only if the tunnel leaks


def run(ctx: Context) -> None:
    backend = ctx.backend
    tunnel = Tunnel(backend)
    (router,) = nodes_with_role(backend, "site-router")
    site = router.labels["vpnlab.vpn.subnets"]
    subnet = str(backend.topology.network(site).subnet)
    host_a, host_b = (n.name for n in nodes_with_role(backend, "site-host"))
    client, lan_host = tunnel.clients[0], tunnel.hosts[0]
    gateway = address(backend, tunnel.gateway.name)

    with ctx.step(f"{router.name} gets a client certificate from the lab CA") as step:
        cert, _ = pki.issue(Path(tunnel.pki["dir"]), router.name, "client")
        step.detail = f"{cert.name}, signed by {Path(tunnel.pki['ca']).name}"
    with ctx.step(f"LAN hosts route {site} ({subnet}) via the gateway {gateway}") as step:
        for host in tunnel.hosts:
            backend.ensure(host, ["ip", "route", "replace", subnet, "via", gateway])
        step.detail = ", ".join(tunnel.hosts)
    try:
        connect(ctx, tunnel, client, router.name,
                server_flags=["--client-subnet", f"{router.name}={subnet}"])  # fmt: skip
        with ctx.step(f"the server routes {subnet} to {router.name}") as step:
            rows = {c["identity"]: c for c in server_clients(tunnel)}
            assert rows[router.name]["subnets"] == [subnet], rows[router.name]
            step.detail = f"{router.name} at {rows[router.name]['address']} + {subnet}"

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
        with ctx.step("between the sites, only TLS crossed the internet") as step:
            secrets = {"ping payload": bytes.fromhex(PATTERN) * 2}
            for name, where in ((host_a, far_a), (host_b, lan_b), (lan_host, near)):
                secrets[f"{name}'s address"] = ipaddress.IPv4Address(where).packed
            verdict = judge(capture.path, tunnel.port, secrets)
            assert verdict.tls > 0, f"no TLS segments captured ({verdict.packets} packets)"
            assert not verdict.others, f"not tunnelled: {', '.join(verdict.others[:5])}"
            assert not verdict.leaks, "; ".join(verdict.leaks)
            step.detail = f"{verdict.tls} TLS segments, no inner address or payload in clear"
            ctx.metric("tls_segments", verdict.tls)

        spoof = str(ipaddress.ip_network(subnet)[-2])  # in the site, but no node's address
        with ctx.step(f"{client} sending from {spoof} (in {site}) is dropped as spoofed") as step:
            before = {c["identity"]: c["dropped_spoofed"] for c in server_clients(tunnel)}
            backend.ensure(client, ["ip", "address", "add", f"{spoof}/32", "dev", "lo"])
            seen = ping(backend, client, near, "-I", spoof, count=3, wait=1)
            after = {c["identity"]: c["dropped_spoofed"] for c in server_clients(tunnel)}
            grew = after[client] - before[client]
            assert seen.received == 0, f"{lan_host} answered a spoofed source: {seen.output}"
            assert grew >= seen.transmitted > 0, f"dropped_spoofed {before} → {after}"
            assert after[router.name] == before[router.name], f"router's drops {before} → {after}"
            step.detail = (
                f"{seen.transmitted} pings sent, none answered; {client}'s dropped_spoofed "
                f"+{grew}, {router.name}'s unchanged"
            )
            ctx.metric("dropped_spoofed", grew)
    finally:
        tunnel.stop_all()


def server_clients(tunnel: Tunnel) -> list[dict[str, Any]]:
    status = tunnel.status(tunnel.gateway.name)
    assert status, "vpn status on the gateway did not answer"
    return status["clients"]


def verify(result: Result) -> None:
    assert result.metrics["dropped_spoofed"] >= 3, result.metrics
    assert result.metrics["tls_segments"] > 0


SCENARIO = Scenario(
    name="site-to-site",
    description="a second site behind a client router: both sites meet through the tunnel",
    run=run,
    extra=("site2",),
    key_metric="site_rtt_ms",
)
