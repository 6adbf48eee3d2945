"""Prometheus metrics of the gateway (`--metrics ADDR:PORT`, GET /metrics).

The data path already counts everything in plain integers (`vpn.datapath.counters`); calling
prometheus_client per packet would cost more than moving the packet. So nothing here runs
until a scrape: `GatewayCollector` reads the gateway's counters then and yields metric
families. The HTTP endpoint runs on the gateway's own event loop — no thread — so a scrape
never sees the session table half-changed.

Per-client series are labelled by identity (a certificate CN: chosen by whoever holds the
certificate), capped at --metrics-max-identities; the rest are summed as identity="_other",
so a crowd of clients cannot blow up the time-series database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from vpn import log
from vpn.config import parse_endpoint
from vpn.datapath.counters import BATCHES, BUCKETS, BatchSizes, Counters
from vpn.errors import ConfigError
from vpn.server.gateway import Gateway

OTHER = "_other"
# Counters field → the reason label of vpn_dropped_packets_total.
DROPS = {
    "dropped_spoofed": "spoofed_source",
    "dropped_invalid": "bad_frame",
    "dropped_unroutable": "no_route",
    "dropped_queue": "queue_full",
    "dropped_bad_vnet": "bad_vnet",
    "dropped_filtered": "filtered",
}
TRAFFIC = {  # Counters field → (metric suffix, what it counts)
    "rx_bytes": ("received_bytes", "bytes received from clients"),
    "tx_bytes": ("sent_bytes", "bytes sent to clients"),
    "rx_packets": ("received_packets", "packets received from clients"),
    "tx_packets": ("sent_packets", "packets sent to clients"),
}


def by_identity(gateway: Gateway, cap: int) -> dict[str, Counters]:
    """The connected sessions' counters by identity: the first `cap` identities in name order
    on their own, the others summed under _other."""
    sessions = sorted(
        (s for s in gateway.table.connected() if not s.closed), key=lambda s: s.identity
    )
    rows: dict[str, Counters] = {}
    for session in sessions:
        name = session.identity if len(rows) < cap or session.identity in rows else OTHER
        rows[name] = rows.get(name, Counters()).plus(session.counters)
    return rows


def histogram(name: str, doc: str, sizes: BatchSizes) -> HistogramMetricFamily:
    cumulative, buckets = 0, []
    for bound, count in zip((*map(str, BUCKETS), "+Inf"), sizes.counts, strict=True):
        cumulative += count
        buckets.append((bound, float(cumulative)))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=float(sizes.sum))


class GatewayCollector(Collector):
    """Reads a gateway's counters at scrape time."""

    def __init__(self, gateway: Gateway, batches: BatchSizes = BATCHES) -> None:
        self.gateway = gateway
        self.batches = batches

    def collect(self) -> Iterator[Metric]:
        gw = self.gateway
        sessions = gw.table.connected()
        totals = gw.counters.plus(*(s.counters for s in sessions))
        yield GaugeMetricFamily("vpn_sessions", "clients connected now", value=len(sessions))
        yield GaugeMetricFamily(
            "vpn_handshaking", "connections not yet logged in", value=gw.handshaking
        )
        yield CounterMetricFamily("vpn_handshakes", "TLS handshakes begun", value=gw.handshakes)
        failures = CounterMetricFamily(
            "vpn_handshake_failures", "handshakes and logins that failed", labels=["reason"]
        )
        for reason, count in sorted(gw.failures.items()):
            failures.add_metric([reason], count)
        yield failures
        for field, (suffix, doc) in TRAFFIC.items():
            yield CounterMetricFamily(f"vpn_{suffix}", doc, value=getattr(totals, field))
        drops = CounterMetricFamily("vpn_dropped_packets", "packets dropped", labels=["reason"])
        for field, reason in DROPS.items():
            drops.add_metric([reason], getattr(totals, field))
        yield drops
        yield CounterMetricFamily(
            "vpn_auth_refusals", "wrong user name or password", value=gw.admission.auth_refused
        )
        admission = CounterMetricFamily(
            "vpn_admission_events", "admission limits at work", labels=["event"]
        )
        for event, count in gw.admission.as_dict().items():
            admission.add_metric([event], count)
        yield admission
        yield from self._clients()
        yield histogram(
            "vpn_batch_packets", "packets handed over per read of a TLS stream", self.batches
        )

    def _clients(self) -> Iterator[Metric]:
        rows = by_identity(self.gateway, self.gateway.config.metrics_max_identities)
        for field, (suffix, doc) in TRAFFIC.items():
            family = CounterMetricFamily(f"vpn_client_{suffix}", doc, labels=["identity"])
            for name, counters in rows.items():
                family.add_metric([name], getattr(counters, field))
            yield family
        dropped = CounterMetricFamily(
            "vpn_client_dropped_packets", "packets dropped, by client", labels=["identity"]
        )
        for name, counters in rows.items():
            dropped.add_metric([name], sum(getattr(counters, f) for f in DROPS))
        yield dropped


def registry_for(gateway: Gateway) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(gateway))
    return registry


async def serve(address: str, registry: CollectorRegistry) -> asyncio.AbstractServer:
    """GET /metrics on `address` (ADDR:PORT), on this event loop."""
    host, port = parse_endpoint(address, "--metrics", default_port=9100)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            line = request.split(b"\r\n", 1)[0].split()
            if len(line) >= 2 and line[0] == b"GET" and line[1].split(b"?")[0] == b"/metrics":
                body, status, kind = generate_latest(registry), "200 OK", CONTENT_TYPE_LATEST
            else:
                body, status, kind = b"only GET /metrics here\n", "404 Not Found", "text/plain"
            head = f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
            writer.write(head.encode() + b"Connection: close\r\n\r\n" + body)
            await writer.drain()
        except (
            TimeoutError,
            ConnectionError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ):
            pass
        finally:
            writer.close()

    try:
        server = await asyncio.start_server(handle, host, port, limit=8192)
    except OSError as exc:
        raise ConfigError(
            f"--metrics {address}: cannot listen ({exc.strerror})",
            advice="pick a free port, or an address of this machine",
        ) from None
    log.event("metrics_listening", metrics=f"{host}:{port}")
    return server
