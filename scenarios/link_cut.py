"""The client's cable to the internet is pulled for a few seconds while it pings a LAN host:
the TLS connection is TCP, so the packets wait in the send buffers and are retransmitted once
the link is back; the tunnel carries on without a reconnect and without restarting anything.

How long a cut: the tunnel runs with keepalive 2 s and dead-peer 6 s (Tunnel's flags), so
either end gives the connection up after 6 s (checked once a second) without a byte from the
other. TCP resends a lost segment after 0.2 s, then doubles the wait (0.2, 0.6, 1.4, 3.0, 6.2 s
after the loss), so traffic resumes at the first resend, from either end, after the link is back.
Measured on namespaces (outage for a cut): 2 s → 2.0; 3 s → 3.2–4.1; 4 s → 4.3–5.5; 5 s → 6.1,
the resend at 6.2 s, racing dead-peer. CUT = 3 s: a break anyone notices, repaired by TCP alone
with about two seconds to spare before dead-peer; 4 s would leave as little as half a second.
"""

from __future__ import annotations

import re
import time

from scenarios.lab_checks import ContinuousPing, lan_address, wait_until
from scenarios.runner import Context, Result, Scenario
from scenarios.tunnel import Tunnel

CUT = 3.0
DEAD_PEER = 6.0  # Tunnel's --dead-peer


def run(ctx: Context) -> None:
    backend = ctx.backend
    tunnel = Tunnel(backend)
    client = tunnel.clients[0]
    host = tunnel.hosts[0]
    _, target = lan_address(tunnel, host)
    ping: ContinuousPing | None = None
    try:
        with ctx.step(f"tunnel up; {client} pings {host} ({target}) every 0.1 s") as step:
            server = tunnel.start_server()
            vpn = tunnel.start_client(client)
            before = tunnel.wait_connected(client)
            ping = ContinuousPing(backend, client, target, name=f"ping-{client}")
            wait_until("5 replies", lambda: ping.answered() >= 5, 10)
            step.detail = f"{client} {before['address']}, {ping.answered()} replies so far"

        with ctx.step(f"{client}'s link to {tunnel.network} cut for {CUT:g} s") as step:
            backend.link_down(client, tunnel.network)
            try:
                replies = ping.answered()
                time.sleep(CUT)
                during = ping.answered() - replies
            finally:
                backend.link_up(client, tunnel.network)
            assert during <= 2, f"{during} replies while the link was down: was it cut?"
            step.detail = f"{during} replies during the cut (at most one in flight)"

        with ctx.step("the pings flow again") as step:
            mark = ping.answered()
            wait_until("10 new replies", lambda: ping.answered() >= mark + 10, 20)
            stats = ping.stop()
            ping = None
            step.detail = str(stats)

        with ctx.step("same connection: no reconnect, no process restarted") as step:
            after = tunnel.status(client)
            assert after and after["state"] == "connected", after
            assert after["reconnects"] == 0, f"client reconnected: {after['last_error']}"
            assert after["connected_since"] == before["connected_since"], (before, after)
            assert backend.wait(vpn, 0) is None and backend.wait(server, 0) is None
            connects = len(re.findall(rf"event=connect identity={client}\b", backend.logs(server)))
            assert connects == 1, f"server logged {connects} connects of {client}"
            step.detail = (
                f"client reconnects 0, connected since the start; server logged 1 connect, "
                f"{backend.logs(server).count('event=disconnect')} disconnects"
            )

        with ctx.step("outage measured from the pings' timestamps") as step:
            assert CUT - 0.5 < stats.outage_seconds < DEAD_PEER + 1, f"{stats.outage_seconds} s"
            step.detail = (
                f"longest silence {stats.outage_seconds:.2f} s for a {CUT:g} s cut, "
                f"{stats.lost} pings never answered, {stats.late} answered late"
            )
            ctx.metric("cut_seconds", CUT)
            ctx.metric("outage_seconds", stats.outage_seconds)
            ctx.metric("pings_lost", stats.lost)
            ctx.metric("pings_late", stats.late)
    finally:
        if ping is not None:
            backend.stop(ping.process, timeout=2)
        tunnel.stop_all()


def verify(result: Result) -> None:
    assert CUT - 0.5 < result.metrics["outage_seconds"] < DEAD_PEER + 1


SCENARIO = Scenario(
    name="link-cut",
    description="the client's link cut for a few seconds: the tunnel survives, no reconnect",
    run=run,
    key_metric="outage_seconds",
)
