"""A client writes packets with someone else's source address into its tunnel (a raw socket,
IP_HDRINCL): the gateway checks every packet's source against the address it leased, drops and
counts the forged ones, and only the genuine one reaches the LAN."""

from __future__ import annotations

import ipaddress
import json

from scenarios.lab_checks import ip_sources, lan_address, program_argv, run_json, wait_until
from scenarios.runner import Context, Result, Scenario
from scenarios.tunnel import Tunnel

PORT = 9999
IDLE = 3.0  # the receiver stops after this long without a datagram

SENDER = r"""
import json, socket, sys
from vpn.packets import udp
destination, port, *sources = sys.argv[1:]
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)  # IP_HDRINCL
sent = []
for source in sources:
    packet = udp(source, destination, 40000, int(port), f"from {source}".encode())
    raw.sendto(packet, (destination, 0))
    sent.append({"source": source, "bytes": len(packet), "head": packet[:20].hex()})
print(json.dumps(sent))
"""

RECEIVER = r"""
import json, socket, sys
port, idle = int(sys.argv[1]), float(sys.argv[2])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("0.0.0.0", port))
sock.settimeout(idle)
print("ready", flush=True)
try:
    while True:
        data, (source, _) = sock.recvfrom(2048)
        print(json.dumps({"source": source, "data": data.decode(errors="replace")}), flush=True)
except TimeoutError:
    pass
"""


def run(ctx: Context) -> None:
    backend = ctx.backend
    tunnel = Tunnel(backend)
    client = tunnel.clients[0]
    host, other = tunnel.hosts[:2]
    lan, target = lan_address(tunnel, host)
    try:
        with ctx.step(f"{client} connected") as step:
            server = tunnel.start_server()
            tunnel.start_client(client)
            own = tunnel.wait_connected(client)["address"].split("/")[0]
            step.detail = f"{client} leased {own}"

        # a LAN host's address, and a pool address leased to nobody
        nobody = ipaddress.ip_network(tunnel.pool).broadcast_address - 1
        forged = [lan_address(tunnel, other)[1], str(nobody)]
        with ctx.step(f"{client} sends to {host}:{PORT} as {forged[0]}, {own}, {forged[1]}") as s:
            before = tunnel.status(tunnel.gateway.name)["totals"]["dropped_spoofed"]
            argv = program_argv(backend, host, "udp-receiver", RECEIVER, str(PORT), str(IDLE))
            receiver = backend.spawn(host, argv, name="udp-receiver")
            wait_until("the receiver", lambda: "ready" in backend.logs(receiver), 15, 0.1)
            with backend.capture(lan, f"spoofing-{backend.name}", f"udp port {PORT}") as capture:
                sent = run_json(backend, client, "spoofer", SENDER, target, str(PORT),
                                forged[0], own, forged[1])  # fmt: skip
                status = backend.wait(receiver, IDLE + 10)
            assert status == 0, f"receiver exited {status}: {backend.logs(receiver)}"
            s.detail = "; ".join(
                f"{d['source']}: {d['bytes']} bytes, source bytes {d['head'][24:32]}" for d in sent
            )

        with ctx.step(f"only the genuine datagram reached {host}") as step:
            lines = backend.logs(receiver).splitlines()
            got = [json.loads(line)["source"] for line in lines if line.startswith("{")]
            assert got == [own], f"{host} received datagrams from {got}, expected only {own}"
            on_lan = ip_sources(capture.path)
            leaked = [a for a in forged if a in on_lan]
            assert not leaked, f"forged sources seen on the LAN: {leaked}"
            assert own in on_lan, f"the genuine datagram is not in the LAN capture: {on_lan}"
            step.detail = f"{host} received from {got}; on the LAN: UDP from {sorted(set(on_lan))}"

        with ctx.step("the gateway dropped and counted the forged ones") as step:
            server_status = tunnel.status(tunnel.gateway.name)
            (row,) = [c for c in server_status["clients"] if c["identity"] == client]
            after = server_status["totals"]["dropped_spoofed"]
            assert after - before == len(forged), f"dropped_spoofed {before} → {after}"
            log = backend.logs(server)
            assert 'why="spoofed source"' in log, "no event=drop line for the spoofed source"
            drop = next(line for line in log.splitlines() if "spoofed source" in line)
            step.detail = (
                f"{client}: dropped_spoofed {row['dropped_spoofed']}, totals {before} → {after}; "
                f"log: {drop.split(' ', 2)[2]}"
            )
            ctx.metric("dropped_spoofed", after - before)
            ctx.metric("delivered_genuine", len(got))
    finally:
        tunnel.stop_all()


def verify(result: Result) -> None:
    assert result.metrics["dropped_spoofed"] == 2
    assert result.metrics["delivered_genuine"] == 1


SCENARIO = Scenario(
    name="spoofing",
    description="forged source addresses from a client: dropped and counted at the gateway",
    run=run,
    key_metric="dropped_spoofed",
)
