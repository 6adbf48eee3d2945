"""The gateway's server dies (SIGKILL, no goodbye) while every client pings a LAN host ten times
a second, and is started again: each client notices, reconnects by itself and gets its address
back; the pings' timestamps say how long the LAN was out of reach."""

from __future__ import annotations

import signal
import time

from scenarios.lab_checks import ContinuousPing, PingStats, lan_address, wait_until
from scenarios.runner import Context, Result, Scenario
from scenarios.tunnel import Tunnel


def run(ctx: Context) -> None:
    backend = ctx.backend
    tunnel = Tunnel(backend)
    clients = tunnel.clients
    host = tunnel.hosts[0]
    _, target = lan_address(tunnel, host)
    pings: dict[str, ContinuousPing] = {}
    try:
        with ctx.step(f"server up, {len(clients)} clients connected") as step:
            server = tunnel.start_server()
            for client in clients:
                tunnel.start_client(client)
            before = {c: tunnel.wait_connected(c)["address"] for c in clients}
            step.detail = ", ".join(f"{c} {a}" for c, a in before.items())

        with ctx.step(f"every client pings {host} ({target}) every 0.1 s") as step:
            for client in clients:
                pings[client] = ContinuousPing(backend, client, target, name=f"ping-{client}")
            for client, ping in pings.items():
                wait_until(f"5 replies on {client}", lambda p=ping: p.answered() >= 5, 10)
            step.detail = ", ".join(f"{c}: {p.answered()} replies" for c, p in pings.items())

        with ctx.step("server killed with SIGKILL") as step:
            killed_at = time.monotonic()
            backend.signal(server, signal.SIGKILL)
            status = backend.wait(server, 10)
            # killed by signal 9: wait() says -9 (as Popen does) on every backend
            assert status == -signal.SIGKILL, f"exit status {status}"
            step.detail = f"exit status {status}, no goodbye sent to the clients"

        with ctx.step("server started again; every client reconnects by itself, same address") as s:
            tunnel.start_server(name="vpn-server-again")
            listening = time.monotonic() - killed_at
            after = {c: tunnel.wait_connected(c, 30, reconnects=1) for c in clients}
            back_in = time.monotonic() - killed_at
            moved = {c: s["address"] for c, s in after.items() if s["address"] != before[c]}
            assert not moved, f"addresses changed: {moved} (before: {before})"
            s.detail = (
                ", ".join(
                    f"{c} reconnects {s['reconnects']} {s['address']}" for c, s in after.items()
                )
                + f"; server listening again {listening:.1f} s, all clients back {back_in:.1f} s "
                "after the kill"
            )
            ctx.metric("reconnected_after_seconds", round(back_in, 2))

        with ctx.step("the pings flow again") as step:
            marks = {c: p.answered() for c, p in pings.items()}
            for client, ping in pings.items():
                wait_until(
                    f"10 new replies on {client}",
                    lambda p=ping, m=marks[client]: p.answered() >= m + 10,
                    15,
                )
            stats: dict[str, PingStats] = {c: p.stop() for c, p in pings.items()}
            pings.clear()
            step.detail = "; ".join(f"{c}: {s}" for c, s in stats.items())

        with ctx.step("outage measured from the pings' timestamps") as step:
            outage = max(s.outage_seconds for s in stats.values())
            lost = sum(s.lost for s in stats.values())
            assert outage < 30, f"outage {outage} s"
            step.detail = f"longest silence {outage:.2f} s, {lost} pings never answered"
            ctx.metric("outage_seconds", outage)
            ctx.metric("pings_lost", lost)
            ctx.metric("per_client", {c: str(s) for c, s in stats.items()})
    finally:
        for ping in pings.values():
            backend.stop(ping.process, timeout=2)
        tunnel.stop_all()


def verify(result: Result) -> None:
    assert 0 < result.metrics["outage_seconds"] < 30
    assert result.metrics["reconnected_after_seconds"] < 30


SCENARIO = Scenario(
    name="gateway-restart",
    description="server killed during continuous pings and restarted: clients come back alone",
    run=run,
    extra=("clients",),
    key_metric="outage_seconds",
)
