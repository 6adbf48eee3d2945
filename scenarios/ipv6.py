"""IPv6 end to end: the client reaches the gateway at its IPv6 address on the internet, and
only IPv6 travels inside the tunnel — on the wire nothing of IPv4 at all, and no inner address
or payload in clear. The lab's networks are dual-stack; this run uses IPv6 alone on both."""

from __future__ import annotations

import ipaddress

from scenarios.pcap import assert_only_tunnel
from scenarios.runner import Context, Result, Scenario
from scenarios.tunnel import Tunnel

PATTERN = "c0ffee66"  # ping payload; in clear on the internet segment it would be a leak
STREAM_SECONDS = 2


def run(ctx: Context) -> None:
    backend = ctx.backend
    with ctx.step("lab PKI with the gateway's IPv6 address in its certificate") as step:
        tunnel = Tunnel(backend)
        assert tunnel.pool6, "the gateway has no IPv6 pool: label vpnlab.vpn.pool6 in compose"
        assert tunnel.server_address6, f"network {tunnel.network} has no IPv6 subnet"
        step.detail = f"server '{tunnel.gateway.name}', SAN {tunnel.server_address6}"
    client = tunnel.clients[0]
    topology = backend.topology
    hosts6 = {h: str(topology.node(h).attachment("lan").address6) for h in tunnel.hosts}
    assert all(a != "None" for a in hosts6.values()), f"a LAN host has no IPv6 address: {hosts6}"
    try:
        with ctx.step("VPN server listening on both families") as step:
            tunnel.start_server()
            listening = backend.ensure(
                tunnel.gateway.name, ["ss", "-Hltn", f"sport = :{tunnel.port}"]
            )
            assert f"[::]:{tunnel.port}" in listening or f"*:{tunnel.port}" in listening, listening
            step.detail = f"{tunnel.listen}, pool {tunnel.pool}, pool6 {tunnel.pool6}"

        with backend.capture(tunnel.network, f"ipv6-{backend.name}") as capture:
            with ctx.step("client connected to the gateway's IPv6 address") as step:
                tunnel.start_client(client, outer6=True)
                status = tunnel.wait_connected(client)
                address6 = status["address6"].split("/")[0]
                assert ipaddress.ip_address(address6) in ipaddress.ip_network(tunnel.pool6)
                (row,) = [
                    c for c in tunnel.status(tunnel.gateway.name)["clients"]
                    if c["identity"] == client
                ]  # fmt: skip
                outer6 = str(topology.node(client).address6(tunnel.network))
                assert outer6 in row["peer"], f"the server sees {row['peer']}, not {outer6}"
                step.detail = f"from {row['peer']} to {tunnel.endpoint(ipv6=True)}: {address6}"
                ctx.metric("client_address6", address6)

            with ctx.step("every LAN host answers IPv6 pings through the tunnel") as step:
                for host, address in hosts6.items():
                    ok, summary = tunnel.ping(client, address, count=3, extra=["-p", PATTERN])
                    assert ok, f"{host} ({address}): {summary}"
                first_host, first6 = next(iter(hosts6.items()))
                ok, summary = tunnel.ping(first_host, address6, count=2)
                assert ok, f"{first_host} → {address6}: {summary}"
                step.detail = f"{len(hosts6)} hosts × 3 pings; {first_host} reaches {address6}"

            with ctx.step("a TCP stream over IPv6 through the tunnel") as step:
                mbit = tcp6_stream(tunnel, client, first_host, first6)
                step.detail = f"{client} → {first_host} [{first6}]: {mbit:g} Mbit/s (iperf3 -6)"
                ctx.metric("tcp6_mbit", mbit)

        with ctx.step("only TLS over IPv6 crossed the internet segment") as step:
            secrets = {"ping payload": bytes.fromhex(PATTERN) * 4}
            for host, address in hosts6.items():
                secrets[f"{host}'s address {address}"] = ipaddress.IPv6Address(address).packed
            secrets[f"the client's VPN address {address6}"] = ipaddress.IPv6Address(address6).packed
            verdict = assert_only_tunnel(capture.path, tunnel.port, secrets)
            assert verdict.tls_families[6] > 0, f"no TLS over IPv6 captured: {verdict.protocols}"
            assert verdict.families[4] == 0, f"IPv4 on the wire: {verdict.protocols}"
            step.detail = (
                f"{verdict.tls_families[6]} TLS segments over IPv6, 0 IPv4 packets, "
                f"{verdict.protocols['ICMPv6 ND/MLD']} ND/MLD, no inner address in clear "
                f"(pcap: {capture.path.name})"
            )
            ctx.metric("tls6_segments", verdict.tls_families[6])
            ctx.metric("ipv4_packets", verdict.families[4])
    finally:
        tunnel.stop_all()


def tcp6_stream(tunnel: Tunnel, client: str, host: str, address: str) -> float:
    """iperf3 over IPv6 from client to host's address for STREAM_SECONDS: the receiver's rate."""
    backend = tunnel.backend
    listen = ["iperf3", "-s", "-1", "--forceflush", "-B", address]
    server = backend.spawn(host, listen, name="iperf3-v6")
    tunnel.processes[server.name] = server  # stopped with the rest, whatever happens
    tunnel.wait_log(server, "Server listening", "iperf3 to listen")
    argv = ["iperf3", "-6", "-c", address, "-t", str(STREAM_SECONDS), "-f", "m"]
    report = backend.ensure(client, argv, timeout=STREAM_SECONDS + 30)
    received = [line for line in report.splitlines() if "receiver" in line]
    assert received, report
    mbit = float(received[-1].split("Mbits/sec")[0].split()[-1])
    assert mbit > 0, received[-1]
    return mbit


def verify(result: Result) -> None:
    assert result.metrics["tls6_segments"] > 0 and result.metrics["ipv4_packets"] == 0
    assert ":" in result.metrics["client_address6"] and result.metrics["tcp6_mbit"] > 0


SCENARIO = Scenario(
    name="ipv6",
    description="IPv6 only: the client reaches the gateway's IPv6 address; IPv6 inside; no IPv4",
    run=run,
    key_metric="tcp6_mbit",
)
