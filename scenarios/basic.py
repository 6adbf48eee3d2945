"""The classic lab's main path: no route before the tunnel, one through it after, and only TLS
on the wire in between."""

from __future__ import annotations

import ipaddress

from scenarios.pcap import TLS_APPLICATION_DATA, assert_only_tunnel
from scenarios.runner import Context, Scenario
from scenarios.tunnel import NO_IPV6, TUN, Tunnel

PATTERN = "5ca1ab1e"  # ping payload: if it shows up on the internet segment, the tunnel leaks


def run(ctx: Context) -> None:
    backend = ctx.backend
    with ctx.step("lab PKI generated") as step:
        tunnel = Tunnel(backend)
        step.detail = f"CA, server '{tunnel.gateway.name}', clients {', '.join(tunnel.clients)}"
    client = tunnel.clients[0]
    hosts = {name: str(backend.topology.node(name).address("lan")) for name in tunnel.hosts}
    # The hosts' IPv6 addresses on the LAN, where the lab is dual-stack and the VPN has a pool6.
    hosts6 = {
        name: str(address)
        for name in tunnel.hosts
        for address in [backend.topology.node(name).attachment("lan").address6]
        if address and tunnel.pool6
    }

    with ctx.step("client cannot reach any LAN host before the tunnel") as step:
        for name, address in hosts.items():
            ok, summary = tunnel.ping(client, address, timeout=1)
            assert not ok, f"{name} ({address}) answered without the tunnel: {summary}"
        step.detail = f"{len(hosts)} hosts unreachable"
    if hosts6:
        with ctx.step("client has no IPv6 route to the LAN before the tunnel") as step:
            for name, address in hosts6.items():
                route = backend.exec(client, ["ip", "-6", "route", "get", address], timeout=10)
                assert route.returncode != 0, f"{name} ({address}): {route.stdout.strip()}"
                ok, summary = tunnel.ping(client, address, timeout=1)
                assert not ok, f"{name} ({address}) answered without the tunnel: {summary}"
            step.detail = f"{len(hosts6)} IPv6 hosts: no route, no answer"
    else:
        ctx.skip("client has no IPv6 route to the LAN before the tunnel", NO_IPV6)

    try:
        with ctx.step("VPN server listening on the gateway") as step:
            tunnel.start_server()
            pool6 = f", pool6 {tunnel.pool6}" if tunnel.pool6 else ""
            step.detail = f"{tunnel.listen}, pool {tunnel.pool}{pool6}"
        with ctx.step("client connected, tunnel up") as step:
            tunnel.start_client(client)
            status = tunnel.wait_connected(client)
            step.detail = f"{client} got {status['address']} on {status['tun']}"
            ctx.metric("client_address", status["address"])
        with ctx.step(f"client's route to the LAN goes through {TUN}") as step:
            first = next(iter(hosts.values()))
            route = backend.ensure(client, ["ip", "route", "get", first]).strip()
            assert f"dev {status['tun']}" in route, f"route to {first}: {route}"
            step.detail = route.splitlines()[0]
        if hosts6:
            with ctx.step(f"client's IPv6 address and route to the LAN through {TUN}") as step:
                assert status.get("address6"), f"no IPv6 address in the client's status: {status}"
                first6 = next(iter(hosts6.values()))
                route = backend.ensure(client, ["ip", "-6", "route", "get", first6]).strip()
                assert f"dev {status['tun']}" in route, f"route to {first6}: {route}"
                step.detail = f"{status['address6']}; {route.splitlines()[0]}"
                ctx.metric("client_address6", status["address6"])

        capture_name = f"basic-{backend.name}"
        with backend.capture(tunnel.network, capture_name) as capture:
            with ctx.step("each LAN host answers pings through the tunnel") as step:
                rtts = []
                for name, address in hosts.items():
                    ok, summary = tunnel.ping(client, address, count=3, extra=["-p", PATTERN])
                    assert ok, f"{name} ({address}): {summary}"
                    rtts.append(summary)
                step.detail = f"{len(hosts)} hosts × 3 pings answered"
            with ctx.step("a LAN host reaches the client's VPN address") as step:
                vpn_address = status["address"].split("/")[0]
                ok, summary = tunnel.ping(tunnel.hosts[0], vpn_address, count=2)
                assert ok, summary
                step.detail = f"{tunnel.hosts[0]} → {vpn_address}: {summary}"
            if hosts6:
                with ctx.step("each LAN host answers IPv6 pings through the tunnel") as step:
                    for name, address in hosts6.items():
                        ok, summary = tunnel.ping(client, address, count=3, extra=["-p", PATTERN])
                        assert ok, f"{name} ({address}): {summary}"
                    vpn_address6 = status["address6"].split("/")[0]
                    ok, summary = tunnel.ping(tunnel.hosts[0], vpn_address6, count=2)
                    assert ok, f"{tunnel.hosts[0]} → {vpn_address6}: {summary}"
                    step.detail = (
                        f"{len(hosts6)} hosts × 3 IPv6 pings answered; {tunnel.hosts[0]} reaches "
                        f"{vpn_address6}"
                    )

        with ctx.step("only TLS crossed the internet segment") as step:
            secrets = {"ping payload": bytes.fromhex(PATTERN) * 4}
            for name, address in {**hosts, **hosts6}.items():
                secrets[f"{name}'s address {address}"] = ipaddress.ip_address(address).packed
            verdict = assert_only_tunnel(capture.path, tunnel.port, secrets)
            step.detail = (
                f"{verdict.tls} TLS segments, {verdict.tls_records[TLS_APPLICATION_DATA]} "
                f"application-data records, no ICMP, no inner address in clear "
                f"(pcap: {capture.path.name})"
            )
            ctx.metric("tls_segments", verdict.tls)
            ctx.metric("pcap", str(capture.path))

        with ctx.step("server reports the client and its traffic") as step:
            server = tunnel.status(tunnel.gateway.name)
            assert server, "vpn status on the gateway did not answer"
            (row,) = [c for c in server["clients"] if c["identity"] == client]
            assert row["rx_packets"] >= 3 * len(hosts), row
            step.detail = f"{client}: rx {row['rx_packets']} pkts, tx {row['tx_packets']} pkts"
            ctx.metric("server_rx_packets", row["rx_packets"])
        ok, summary = tunnel.ping(client, next(iter(hosts.values())), count=10)
        ctx.metric("rtt", summary)
        rtt = backend.exec(client, ["ping", "-n", "-q", "-c", "10", "-i", "0.05", first]).stdout
        for line in rtt.splitlines():
            if line.startswith("rtt"):
                ctx.metric("rtt_avg_ms", float(line.split("=")[1].split("/")[1]))
    finally:
        tunnel.stop_all()


SCENARIO = Scenario(
    name="basic",
    description="the client reaches the LAN only through the tunnel; only TLS on the internet",
    run=run,
    key_metric="rtt_avg_ms",
)
