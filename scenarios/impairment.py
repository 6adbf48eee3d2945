"""A bad internet link under the tunnel: a rate limit (tc tbf), random loss (iptables statistic)
and, where the kernel has netem, delay — all on the client's own interface. The tunnel rides
TCP, so loss on the link becomes delay inside it: pings and transfers still complete."""

from __future__ import annotations

from lab import impair
from lab.backends.base import Backend
from lab.model import LabError
from scenarios.lab_faults import skip_step, stream, tunnel_up
from scenarios.probes import ping
from scenarios.runner import SKIPPED, Context, Result, Scenario

RATE_MBIT = 8  # the tbf limit
RATE_BYTES = 3 * 1024 * 1024  # ~3 s at the limit
LOSS = 0.1  # probability of dropping each packet, each way
LOSS_BYTES = 1024 * 1024
DELAY_MS = 50


def run(ctx: Context) -> None:
    with tunnel_up(ctx) as up:
        backend, tunnel, client, host, target = up.backend, up.tunnel, up.client, up.host, up.target
        link = backend.interface(client, tunnel.network)
        with ctx.step(f"unimpaired: 3 MiB {client} → {host} through the tunnel") as step:
            got = stream(tunnel, client, host, RATE_BYTES, upload=True)
            assert got.intact and got.bytes == RATE_BYTES, got
            step.detail = f"{got.mbit} Mbit/s"
            ctx.metric("unimpaired_mbit", got.mbit)

        with ctx.step(f"rate limit {RATE_MBIT} Mbit/s on {client}'s {link}: 3 MiB arrive") as step:
            impair.apply(backend, client, link, impair.Impairment(rate=f"{RATE_MBIT}mbit"))
            got = stream(tunnel, client, host, RATE_BYTES, upload=True)
            assert got.intact and got.bytes == RATE_BYTES, got
            assert got.mbit <= RATE_MBIT * 1.05, f"{got.mbit} Mbit/s passed a {RATE_MBIT} limit"
            assert got.mbit >= RATE_MBIT * 0.5, f"only {got.mbit} Mbit/s of {RATE_MBIT}"
            pinged = ping(backend, client, target, count=5)
            assert pinged.ok, pinged.output
            step.detail = (
                f"{got.mbit} Mbit/s inside the tunnel under a {RATE_MBIT} Mbit/s limit "
                f"({got.mbit / RATE_MBIT:.0%}: TLS and TCP headers take the rest); pings answered"
            )
            ctx.metric("rate_limit_mbit", RATE_MBIT)
            ctx.metric("rate_limited_mbit", got.mbit)
            impair.clear(backend, client, link)

        with ctx.step(f"{LOSS:.0%} random loss each way on {link}: pings and 1 MiB complete") as s:
            impair.apply(backend, client, link, impair.Impairment(loss=LOSS * 100))
            pinged = ping(backend, client, target, count=20, wait=3)
            got = stream(tunnel, client, host, LOSS_BYTES, upload=True, timeout=120)
            assert got.intact and got.bytes == LOSS_BYTES, got
            dropped = dropped_packets(backend, client)
            assert dropped > 0, "iptables dropped nothing: the loss was not applied"
            assert pinged.received > 0, f"no ping got through: {pinged.output}"
            s.detail = (
                f"link lost {dropped} packets; ping saw {pinged.summary} (TCP resends under the "
                f"tunnel), rtt {pinged.rtt_avg_ms} ms; 1 MiB intact at {got.mbit} Mbit/s"
            )
            ctx.metric("link_packets_dropped", dropped)
            ctx.metric("ping_loss_percent", pinged.loss)
            ctx.metric("lossy_ping_rtt_ms", pinged.rtt_avg_ms)
            ctx.metric("lossy_mbit", got.mbit)
            impair.clear(backend, client, link)

        name = f"delay {DELAY_MS} ms on {link} (netem): pings answered, slower"
        try:
            impair.apply(backend, client, link, impair.Impairment(delay=f"{DELAY_MS}ms"))
        except LabError as exc:
            if impair.NO_NETEM not in str(exc):
                raise
            skip_step(ctx, name, str(exc))
            ctx.metric("netem", f"skipped: {impair.NO_NETEM}")
        else:
            with ctx.step(name) as step:
                pinged = ping(backend, client, target, count=5)
                assert pinged.ok, pinged.output
                assert (pinged.rtt_avg_ms or 0) >= DELAY_MS, f"rtt {pinged.rtt_avg_ms} ms"
                step.detail = f"rtt {pinged.rtt_avg_ms} ms with {DELAY_MS} ms added"
                ctx.metric("netem", f"rtt {pinged.rtt_avg_ms} ms")


def dropped_packets(backend: Backend, node: str) -> int:
    """Packets the statistic rules on node dropped (iptables counters, both chains)."""
    listing = backend.ensure(node, ["iptables", "-L", "-v", "-n", "-x"])
    return sum(int(line.split()[0]) for line in listing.splitlines() if "statistic" in line)


def verify(result: Result) -> None:
    m = result.metrics
    assert m["rate_limited_mbit"] <= m["rate_limit_mbit"] * 1.05, m
    assert m["link_packets_dropped"] > 0 and m["ping_loss_percent"] < 100, m
    delay_steps = [s for s in result.steps if s.name.startswith("delay")]
    netem = str(m.get("netem", ""))
    if netem.startswith("skipped:"):  # no netem here: the step must say skipped, not passed
        assert delay_steps and all(s.status == SKIPPED for s in delay_steps), result.steps
    else:
        words = netem.split()
        rtt = float(words[1]) if len(words) == 3 and words[1].replace(".", "", 1).isdigit() else 0
        assert words[:1] == ["rtt"] and rtt >= DELAY_MS, m


SCENARIO = Scenario(
    name="impairment",
    description="rate limit, random loss and delay on the client's link: the tunnel copes",
    run=run,
    key_metric="rate_limited_mbit",
)
