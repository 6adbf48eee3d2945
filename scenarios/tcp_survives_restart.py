"""A TCP session through the tunnel outlives a crash of the VPN server: the client reconnects,
gets its address back, and TCP resends what the outage swallowed — every byte arrives once."""

from __future__ import annotations

import signal
import time

from scenarios.lab_faults import finish, last_json, program, tunnel_up, vpn_address
from scenarios.runner import Context, Result, Scenario

PORT = 5400
INTERVAL = 0.01  # seconds between two counters
STEADY = 1.0  # seconds of traffic before the crash and after the reconnect

# `receive HOST PORT`: take one connection, check that the 8-byte counters run 0, 1, 2 … with
# nothing missing or repeated, and time the longest silence between two reads.
RECEIVER = """\
import json, socket, struct, sys, time
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("listening", flush=True)
sock, _ = server.accept()
print("connected", flush=True)
buf, expected, lost, repeated = bytearray(), 0, 0, 0
last = time.monotonic()
gap, gap_after = 0.0, 0
while data := sock.recv(4096):
    now = time.monotonic()
    if now - last > gap:
        gap, gap_after = now - last, expected
    last = now
    buf += data
    while len(buf) >= 8:
        (value,) = struct.unpack("!Q", buf[:8])
        del buf[:8]
        if value < expected:
            repeated += 1
            continue
        lost += value - expected
        expected = value + 1
sock.close()
print(json.dumps({"received": expected, "lost": lost, "repeated": repeated,
                  "trailing_bytes": len(buf), "max_gap": round(gap, 3),
                  "gap_after": gap_after}), flush=True)
"""

# `send HOST PORT INTERVAL`: write counter n every INTERVAL s until SIGTERM, then close and
# wait until the receiver has read everything (it closes last).
SENDER = """\
import json, signal, socket, struct, sys, time
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
sock = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
sock.settimeout(None)
interval, n, due = float(sys.argv[3]), 0, time.monotonic()
while not stop:
    sock.sendall(struct.pack("!Q", n))
    n += 1
    due += interval
    time.sleep(max(0.0, due - time.monotonic()))
sock.shutdown(socket.SHUT_WR)
sock.settimeout(120)
sock.recv(1)
print(json.dumps({"sent": n}), flush=True)
"""


def run(ctx: Context) -> None:
    with tunnel_up(ctx) as up:
        backend, tunnel, client, host, target = up.backend, up.tunnel, up.client, up.host, up.target
        before = up.status
        with ctx.step(f"a TCP session {client} → {host} carries a counter every 10 ms") as step:
            receiver = backend.spawn(
                host, [*program(backend, "receiver", RECEIVER), target, str(PORT)], name="receiver"
            )
            tunnel.processes[receiver.name] = receiver
            tunnel.wait_log(receiver, "listening", "the receiver")
            argv = [*program(backend, "sender", SENDER), target, str(PORT), str(INTERVAL)]
            sender = backend.spawn(client, argv, name="sender")
            tunnel.processes[sender.name] = sender
            tunnel.wait_log(receiver, "connected", "the sender to connect")
            time.sleep(STEADY)
            step.detail = f"receiver on {target}:{PORT}, sender on {client}, {STEADY:g} s steady"

        with ctx.step("the VPN server is killed (SIGKILL) and started again") as step:
            server = tunnel.processes["vpn-server"]
            backend.signal(server, signal.SIGKILL)
            status = backend.wait(server, 10)
            assert status is not None, "the server did not die"
            killed = time.monotonic()
            tunnel.start_server(name="vpn-server-again")
            step.detail = (
                f"exit status {status}; listening again after {time.monotonic() - killed:.1f} s"
            )

        with ctx.step(f"{client} reconnects and gets its address back") as step:
            after = tunnel.wait_connected(client, timeout=30, reconnects=1)
            assert vpn_address(after) == vpn_address(before), (before["address"], after["address"])
            step.detail = (
                f"{vpn_address(after)} again, {time.monotonic() - killed:.1f} s after the kill, "
                f"{after['reconnects']} reconnect(s)"
            )

        with ctx.step("the session survived: every counter arrived once, in order") as step:
            time.sleep(STEADY)
            backend.signal(sender, signal.SIGTERM)
            sent = last_json(finish(backend, sender, 150))["sent"]
            report = last_json(finish(backend, receiver, 10))
            assert report["lost"] == 0 and report["repeated"] == 0, report
            assert report["trailing_bytes"] == 0, report
            assert report["received"] == sent, f"sent {sent}, {report}"
            assert report["max_gap"] > 5 * INTERVAL, f"no outage felt: {report}"
            step.detail = (
                f"{sent} counters sent, {report['received']} received, 0 lost, 0 repeated; "
                f"longest silence {report['max_gap']} s (after counter {report['gap_after']})"
            )
            ctx.metric("counters", sent)
            ctx.metric("outage_seconds", report["max_gap"])


def verify(result: Result) -> None:
    assert result.metrics["counters"] > 0
    assert 0 < result.metrics["outage_seconds"] < 60, result.metrics


SCENARIO = Scenario(
    name="tcp-survives-restart",
    description="a TCP session through the tunnel survives a crash and restart of the server",
    run=run,
    key_metric="outage_seconds",
)
