"""Packets larger than any MTU on the way: a 3000-byte ping and an 8000-byte UDP datagram are
cut into fragments, cross the tunnel, and come back whole on the far side."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from scenarios.lab_faults import finish, last_json, program, tunnel_up, vpn_address
from scenarios.pcap import ip_packets
from scenarios.probes import ping
from scenarios.runner import Context, Result, Scenario, StepFailed
from scenarios.tunnel import Tunnel

PING_SIZE = 3000
DATAGRAM_SIZE = 8000
UDP_PORT = 5300
ICMP, UDP = 1, 17

# `receive HOST PORT`: take one datagram, send it back, report it. `send HOST PORT FILE`: send
# FILE's bytes as one datagram and report the echo.
DATAGRAM = """\
import hashlib, json, socket, sys
role, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.settimeout(20)
if role == "receive":
    sock.bind((host, port))
    print("ready", flush=True)
    data, peer = sock.recvfrom(65535)
    sock.sendto(data, peer)
else:
    sock.sendto(open(sys.argv[4], "rb").read(), (host, port))
    data, peer = sock.recvfrom(65535)
report = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "peer": peer[0]}
print(json.dumps(report), flush=True)
"""


def run(ctx: Context) -> None:
    with tunnel_up(ctx) as up:
        backend, tunnel, client, host, target = up.backend, up.tunnel, up.client, up.host, up.target
        status = up.status
        with node_capture(tunnel, host, "lan") as capture:
            with ctx.step(f"{client} → {host}: a {PING_SIZE}-byte ping is answered") as step:
                seen = ping(backend, client, target, size=PING_SIZE, count=2)
                assert seen.ok, seen.output
                step.detail = f"{PING_SIZE + 28}-byte packets, {seen.summary}"

            payload = backend.workdir / "programs" / "datagram.bin"
            payload.parent.mkdir(parents=True, exist_ok=True)
            payload.write_bytes(os.urandom(DATAGRAM_SIZE))
            expected = hashlib.sha256(payload.read_bytes()).hexdigest()
            argv = program(backend, "datagram", DATAGRAM)
            with ctx.step(f"{host} receives one {DATAGRAM_SIZE}-byte UDP datagram, intact") as s:
                receiver = backend.spawn(host, [*argv, "receive", target, str(UDP_PORT)],
                                         name="datagram-receiver")  # fmt: skip
                tunnel.processes[receiver.name] = receiver
                tunnel.wait_log(receiver, "ready", "the UDP receiver")
                sent = backend.exec(
                    client,
                    [*argv, "send", target, str(UDP_PORT), backend.node_path(payload)],
                    timeout=30,
                )
                got = last_json(finish(backend, receiver, 25))
                assert got["bytes"] == DATAGRAM_SIZE, f"{host} received {got['bytes']} bytes"
                assert got["sha256"] == expected, "the datagram's content changed on the way"
                assert got["peer"] == vpn_address(status), f"from {got['peer']}"
                s.detail = f"{got['bytes']} bytes from {got['peer']}, sha256 as sent"
            with ctx.step(f"{client} gets the {DATAGRAM_SIZE} bytes back, intact") as step:
                if sent.returncode != 0:
                    raise StepFailed(f"no echo: {(sent.stderr or sent.stdout).strip()[-300:]}")
                echo = last_json(sent.stdout)
                assert (echo["bytes"], echo["sha256"]) == (DATAGRAM_SIZE, expected), echo
                step.detail = f"{echo['bytes']} bytes from {echo['peer']}, sha256 as sent"

        with ctx.step(f"on {host}'s LAN interface they travelled as fragments, both ways") as step:
            pieces = fragments(capture)
            here, there = vpn_address(status), target
            for proto, name in ((ICMP, "ICMP"), (UDP, "UDP")):
                for dst in (here, there):
                    assert pieces[proto, dst] >= 2, f"{name} fragments to {dst}: {dict(pieces)}"
            step.detail = ", ".join(
                f"{n} {'ICMP' if p == ICMP else 'UDP'} fragments → {d}"
                for (p, d), n in sorted(pieces.items())
            )
            ctx.metric("udp_fragments_to_host", pieces[UDP, there])
            ctx.metric("udp_fragments_to_client", pieces[UDP, here])


@contextlib.contextmanager
def node_capture(tunnel: Tunnel, node: str, network: str) -> Iterator[Path]:
    """tcpdump on the node itself: what its interface carries, before any reassembly (on the
    Docker host, bridge netfilter reassembles fragments before a capture on the bridge sees)."""
    backend = tunnel.backend
    path = backend.workdir / "captures" / f"large-packet-{node}.pcap"
    path.parent.mkdir(parents=True, exist_ok=True)
    argv = ["tcpdump", "-i", backend.interface(node, network), "-n", "-U", "--immediate-mode"]
    process = backend.spawn(node, [*argv, "-Z", "root", "-w", backend.node_path(path)],
                            name=f"tcpdump-{node}")  # fmt: skip
    tunnel.processes[process.name] = process
    tunnel.wait_log(process, "listening on", f"tcpdump on {node}")
    try:
        yield path
    finally:
        backend.signal(process, signal.SIGINT)
        backend.wait(process, 5)


def fragments(pcap: Path) -> Counter[tuple[int, str]]:
    """IPv4 fragments (more-fragments flag or an offset) by (protocol, destination)."""
    count: Counter[tuple[int, str]] = Counter()
    for packet in ip_packets(pcap):
        if hasattr(packet, "offset") and (packet.mf or packet.offset):
            count[packet.p, socket.inet_ntoa(packet.dst)] += 1
    return count


def verify(result: Result) -> None:
    assert result.metrics["udp_fragments_to_host"] >= 2, result.metrics
    assert result.metrics["udp_fragments_to_client"] >= 2, result.metrics


SCENARIO = Scenario(
    name="large-packet",
    description=f"a {PING_SIZE}-byte ping and an {DATAGRAM_SIZE}-byte UDP datagram cross whole",
    run=run,
    key_metric="udp_fragments_to_host",
)
