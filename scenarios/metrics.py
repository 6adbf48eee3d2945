"""The gateway's Prometheus metrics (`--metrics`, on in every lab run): scraped from the gateway
node itself, so no traffic leaves the lab, before and after pings through the tunnel; the
session gauge, the traffic counters, the client's own series and the batch histogram move."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from scenarios.lab_checks import lan_address, node_python
from scenarios.runner import Context, Scenario
from scenarios.tunnel import METRICS, Tunnel

SCRAPE = (
    "import sys, urllib.request; "
    "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"
)


def scrape(ctx: Context, tunnel: Tunnel) -> dict[str, float]:
    """Every sample on the gateway's /metrics as 'name{label=value}' → value."""
    argv = [
        *node_python(ctx.backend, tunnel.gateway.name),
        "-c",
        SCRAPE,
        f"http://{METRICS}/metrics",
    ]
    text = ctx.backend.ensure(tunnel.gateway.name, argv)
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def run(ctx: Context) -> None:
    tunnel = Tunnel(ctx.backend)
    client = tunnel.clients[0]
    host = tunnel.hosts[0]
    _, target = lan_address(tunnel, host)
    mine = f"vpn_client_received_packets_total{{identity={client}}}"
    try:
        with ctx.step(f"server with metrics on {METRICS}, {client} connected") as step:
            tunnel.start_server()
            tunnel.start_client(client)
            status = tunnel.wait_connected(client)
            step.detail = f"{client} {status['address']}"
        with ctx.step("metrics scraped on the gateway: one session") as step:
            before = scrape(ctx, tunnel)
            assert before["vpn_sessions"] == 1, f"vpn_sessions {before.get('vpn_sessions')}"
            assert before["vpn_handshakes_total"] >= 1
            step.detail = f"{len(before)} samples, vpn_sessions 1"
        with ctx.step(f"20 pings to {host} ({target}) move the counters") as step:
            ok, summary = tunnel.ping(client, target, count=20, extra=["-i", "0.05"])
            assert ok, summary
            after = scrape(ctx, tunnel)
            moved = {
                key: after[key] - before[key]
                for key in ("vpn_received_packets_total", "vpn_sent_packets_total", mine)
            }
            assert all(delta >= 20 for delta in moved.values()), f"moved: {moved}"
            assert after["vpn_received_bytes_total"] > before["vpn_received_bytes_total"]
            assert after["vpn_batch_packets_count"] > before["vpn_batch_packets_count"]
            step.detail = ", ".join(f"{k} +{v:g}" for k, v in moved.items())
            ctx.metric("received_packets_delta", moved["vpn_received_packets_total"])
        with ctx.step("no drops counted for honest traffic") as step:
            drops = {k: v for k, v in after.items() if k.startswith("vpn_dropped_packets_total")}
            assert drops["vpn_dropped_packets_total{reason=spoofed_source}"] == 0, drops
            step.detail = ", ".join(f"{k.split('=')[1][:-1]} {v:g}" for k, v in drops.items())
    finally:
        tunnel.stop_all()


SCENARIO = Scenario(
    name="metrics",
    description="the gateway's Prometheus metrics, scraped on the gateway, move with the traffic",
    run=run,
    key_metric="received_packets_delta",
)
