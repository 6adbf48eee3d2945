"""A client writes packets with someone else's source address into its tunnel (a raw socket,
IP_HDRINCL; for IPv6 IPPROTO_RAW, which implies IPV6_HDRINCL): the gateway checks every packet's
source against the address it leased, IPv4 and IPv6 alike, drops and counts the forged ones,
and only the genuine one reaches the LAN."""

from __future__ import annotations

import ipaddress
import json
import socket
from pathlib import Path
from typing import Any

import dpkt

from scenarios.lab_checks import ip_sources, lan_address, program_argv, run_json, wait_until
from scenarios.pcap import frames
from scenarios.runner import Context, Result, Scenario
from scenarios.tunnel import NO_IPV6, Tunnel

PORT = 9999
IDLE = 3.0  # the receiver stops after this long without a datagram
LINK_LOCAL = "fe80::bad"  # never a source the gateway may forward

# An IPv6 destination makes it an IPv6 sender: udp6 packets (with their checksum) on an
# AF_INET6 IPPROTO_RAW socket, which takes the whole IPv6 header from the caller.
SENDER = r"""
import json, socket, sys
from vpn.packets import udp, udp6
destination, port, *sources = sys.argv[1:]
six = ":" in destination
family, build = (socket.AF_INET6, udp6) if six else (socket.AF_INET, udp)
raw = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_RAW)  # the header is ours
sent = []
for source in sources:
    packet = build(source, destination, 40000, int(port), f"from {source}".encode())
    raw.sendto(packet, (destination, 0))
    head = packet[:40] if six else packet[:20]
    sent.append({"source": source, "bytes": len(packet), "head": head.hex()})
print(json.dumps(sent))
"""

# `PORT IDLE [6]`: with 6, an IPv6 socket.
RECEIVER = r"""
import json, socket, sys
port, idle = int(sys.argv[1]), float(sys.argv[2])
six = sys.argv[3:] == ["6"]
sock = socket.socket(socket.AF_INET6 if six else socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("::" if six else "0.0.0.0", port))
sock.settimeout(idle)
print("ready", flush=True)
try:
    while True:
        data, (source, *_) = sock.recvfrom(2048)
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
    target6 = backend.topology.node(host).attachment(lan).address6
    other6 = backend.topology.node(other).attachment(lan).address6
    try:
        with ctx.step(f"{client} connected") as step:
            server = tunnel.start_server()
            tunnel.start_client(client)
            status = tunnel.wait_connected(client)
            own = status["address"].split("/")[0]
            own6 = str(status.get("address6") or "").split("/")[0]
            step.detail = f"{client} leased {own}" + (f" and {own6}" if own6 else "")

        # a LAN host's address, and a pool address leased to nobody
        nobody = ipaddress.ip_network(tunnel.pool).broadcast_address - 1
        forged = [lan_address(tunnel, other)[1], str(nobody)]
        with ctx.step(f"{client} sends to {host}:{PORT} as {forged[0]}, {own}, {forged[1]}") as s:
            before = dropped_spoofed(tunnel)
            sent, got, on_lan = exchange(
                tunnel, client, host, lan, target, [forged[0], own, forged[1]]
            )
            s.detail = "; ".join(
                f"{d['source']}: {d['bytes']} bytes, source bytes {d['head'][24:32]}" for d in sent
            )

        with ctx.step(f"only the genuine datagram reached {host}") as step:
            assert got == [own], f"{host} received datagrams from {got}, expected only {own}"
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

        send6 = f"{client} sends IPv6 datagrams to {host}:{PORT}"
        genuine6 = f"only the genuine IPv6 datagram reached {host}"
        counted6 = "the gateway dropped and counted exactly the forged IPv6 ones"
        if not (own6 and target6 and other6):
            for name in (send6, genuine6, counted6):
                ctx.skip(name, NO_IPV6)
            return
        # IPv6: a LAN host's address, a pool6 address leased to nobody, a link-local address
        nobody6 = ipaddress.ip_network(tunnel.pool6).broadcast_address - 1
        forged6 = [str(other6), str(nobody6), LINK_LOCAL]
        with ctx.step(f"{send6}: as {forged6[0]}, {own6}, {forged6[1]}, {forged6[2]}") as s:
            before6 = dropped_spoofed(tunnel)
            sources6 = [forged6[0], own6, forged6[1], forged6[2]]
            sent6, got6, on_lan6 = exchange(tunnel, client, host, lan, str(target6), sources6)
            heads = [bytes.fromhex(d["head"]) for d in sent6]
            assert all(h[0] >> 4 == 6 for h in heads), f"not IPv6: {[h[:1].hex() for h in heads]}"
            s.detail = "; ".join(
                f"{d['source']}: {d['bytes']} bytes, source bytes {d['head'][16:48]}" for d in sent6
            )

        with ctx.step(genuine6) as step:
            assert got6 == [own6], f"{host} received datagrams from {got6}, expected only {own6}"
            leaked6 = [a for a in forged6 if a in on_lan6]
            assert not leaked6, f"forged IPv6 sources seen on the LAN: {leaked6}"
            assert own6 in on_lan6, (
                f"the genuine IPv6 datagram is not in the LAN capture: {on_lan6}"
            )
            step.detail = (
                f"{host} received from {got6}; on the LAN: UDP from {sorted(set(on_lan6))}"
            )

        with ctx.step(counted6) as step:
            server_status = tunnel.status(tunnel.gateway.name)
            (row,) = [c for c in server_status["clients"] if c["identity"] == client]
            after6 = server_status["totals"]["dropped_spoofed"]
            assert after6 - before6 == len(forged6), (
                f"dropped_spoofed {before6} → {after6}, expected +{len(forged6)}"
            )
            # per client too: the IPv4 drops and these (the log line is rate-limited)
            expected = len(forged) + len(forged6)
            assert row["dropped_spoofed"] == expected, f"{client}: {row}, expected {expected}"
            step.detail = (
                f"{client}: dropped_spoofed {row['dropped_spoofed']}, totals {before6} → {after6}; "
                "IPv4 and IPv6 drops share the counter"
            )
            ctx.metric("dropped_spoofed6", after6 - before6)
            ctx.metric("delivered_genuine6", len(got6))
    finally:
        tunnel.stop_all()


def dropped_spoofed(tunnel: Tunnel) -> int:
    status = tunnel.status(tunnel.gateway.name)
    assert status, "vpn status on the gateway did not answer"
    return int(status["totals"]["dropped_spoofed"])


def exchange(
    tunnel: Tunnel, client: str, host: str, lan: str, target: str, sources: list[str]
) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """A receiver on host, a capture on the LAN, one datagram from the client per source:
    (what was sent, the sources host received from, the UDP sources seen on the LAN)."""
    backend = tunnel.backend
    six = ":" in target
    family = ["6"] if six else []
    argv = program_argv(backend, host, "udp-receiver", RECEIVER, str(PORT), str(IDLE), *family)
    name = "udp-receiver6" if six else "udp-receiver"
    receiver = backend.spawn(host, argv, name=name)
    tunnel.processes[name] = receiver
    wait_until("the receiver", lambda: "ready" in backend.logs(receiver), 15, 0.1)
    tag = "-ipv6" if six else ""
    with backend.capture(lan, f"spoofing{tag}-{backend.name}", f"udp port {PORT}") as capture:
        sent = run_json(backend, client, "spoofer", SENDER, target, str(PORT), *sources)
        status = backend.wait(receiver, IDLE + 10)
    assert status == 0, f"receiver exited {status}: {backend.logs(receiver)}"
    lines = backend.logs(receiver).splitlines()
    got = [json.loads(line)["source"] for line in lines if line.startswith("{")]
    on_lan = ip6_sources(capture.path) if six else ip_sources(capture.path)
    return sent, got, on_lan


def ip6_sources(pcap: Path) -> list[str]:
    """The source address of every IPv6 packet in a capture."""
    return [
        socket.inet_ntop(socket.AF_INET6, frame.data.src)
        for frame in frames(pcap)
        if isinstance(frame.data, dpkt.ip6.IP6)
    ]


def verify(result: Result) -> None:
    assert result.metrics["dropped_spoofed"] == 2
    assert result.metrics["delivered_genuine"] == 1
    if "dropped_spoofed6" in result.metrics:  # a lab without IPv6 records none
        assert result.metrics["dropped_spoofed6"] == 3
        assert result.metrics["delivered_genuine6"] == 1


SCENARIO = Scenario(
    name="spoofing",
    description="forged IPv4 and IPv6 sources from a client: dropped and counted at the gateway",
    run=run,
    key_metric="dropped_spoofed",
)
