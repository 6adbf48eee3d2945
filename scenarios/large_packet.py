"""Packets larger than any MTU on the way: a 3000-byte ping and an 8000-byte UDP datagram are
cut into fragments, cross the tunnel, and come back whole on the far side. For IPv6 (a
dual-stack lab), where only the source fragments: a ping at the tunnel MTU crosses whole, the
LAN host learns that MTU from the gateway's Packet Too Big, and the same big ping and datagram
cross in fragments no larger than the tunnel MTU, both ways."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import socket
import struct
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import dpkt

from lab import pcap as pcap_file
from scenarios.lab_faults import Up, finish, last_json, program, tunnel_up, vpn_address
from scenarios.pcap import ip_packets
from scenarios.probes import ping
from scenarios.runner import Context, Result, Scenario, StepFailed
from scenarios.tunnel import NO_IPV6, TUN, Tunnel

PING_SIZE = 3000
DATAGRAM_SIZE = 8000
UDP_PORT = 5300
ICMP, UDP = 1, 17
ICMPV6, FRAGMENT6 = 58, 44  # next header: ICMPv6, IPv6's Fragment header
HEADERS6 = 48  # IPv6 + ICMPv6
PATTERN = "1a79e5ca"  # ping -p: a corrupted byte shows as "wrong data byte"

# `receive HOST PORT`: take one datagram, send it back, report it. `send HOST PORT FILE`: send
# FILE's bytes as one datagram and report the echo. An IPv6 HOST makes it an IPv6 socket.
DATAGRAM = """\
import hashlib, json, socket, sys
role, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
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

        large_ipv6(ctx, up)


@contextlib.contextmanager
def node_capture(tunnel: Tunnel, node: str, network: str, tag: str = "") -> Iterator[Path]:
    """tcpdump on the node itself: what its interface carries, before any reassembly (on the
    Docker host, bridge netfilter reassembles fragments before a capture on the bridge sees)."""
    backend = tunnel.backend
    path = backend.workdir / "captures" / f"large-packet-{node}{tag}.pcap"
    path.parent.mkdir(parents=True, exist_ok=True)
    argv = ["tcpdump", "-i", backend.interface(node, network), "-n", "-U", "--immediate-mode"]
    process = backend.spawn(node, [*argv, "-Z", "root", "-w", backend.node_path(path)],
                            name=f"tcpdump-{node}{tag}")  # fmt: skip
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


def large_ipv6(ctx: Context, up: Up) -> None:
    """The IPv6 steps, on a capture of their own on the host's LAN interface."""
    backend, tunnel, client, host = up.backend, up.tunnel, up.client, up.host
    target6 = backend.topology.node(host).attachment("lan").address6
    gateway6 = tunnel.gateway.attachment("lan").address6
    here6 = str(up.status.get("address6") or "").split("/")[0]
    (link,) = json.loads(backend.ensure(client, ["ip", "-j", "link", "show", TUN]))
    mtu = int(link["mtu"])
    fits = mtu - HEADERS6
    names = [
        f"{client} ↔ {host} over IPv6: {fits}-byte pings, {mtu}-byte packets, cross whole",
        f"{host} learns the tunnel MTU toward {client} from the gateway's Packet Too Big",
        f"{client} → {host} over IPv6: a {PING_SIZE}-byte ping is answered",
        f"{host} receives one {DATAGRAM_SIZE}-byte UDP datagram over IPv6, intact",
        f"{client} gets the {DATAGRAM_SIZE} bytes back over IPv6, intact",
        f"on {host}'s LAN interface IPv6 travelled as fragments of at most {mtu} bytes, both ways",
    ]
    if not (target6 and gateway6 and here6):
        for name in names:
            ctx.skip(name, NO_IPV6)
        return
    there6 = str(target6)
    with node_capture(tunnel, host, "lan", "-ipv6") as capture:
        with ctx.step(names[0]) as step:
            for node, to in ((client, there6), (host, here6)):
                seen = ping(backend, node, to, "-6", "-M", "do", "-p", PATTERN, size=fits, count=2)
                assert seen.ok, seen.output
                assert "wrong data" not in seen.output, seen.output
            step.detail = f"{fits + HEADERS6}-byte packets both ways, unfragmented: {seen.summary}"
        with ctx.step(names[1]) as step:
            seen = ping(backend, host, here6, "-6", "-M", "do", size=fits + 1)
            said = re.search(r"From (\S+) icmp_seq=1 Packet too big: mtu=(\d+)", seen.output)
            assert said and (said[1], int(said[2])) == (str(gateway6), mtu), seen.output
            route = backend.ensure(host, ["ip", "-6", "route", "get", here6]).strip()
            learned = re.search(r"\bmtu (\d+)", route)
            assert learned and int(learned[1]) == mtu, f"no path MTU {mtu} in the route: {route}"
            step.detail = f"{said[0]}; route get {here6}: … mtu {learned[1]}"
        with ctx.step(names[2]) as step:
            seen = ping(backend, client, there6, "-6", "-p", PATTERN, size=PING_SIZE, count=2)
            assert seen.ok, seen.output
            assert "wrong data" not in seen.output, seen.output
            step.detail = f"{PING_SIZE + HEADERS6}-byte packets, {seen.summary}, no wrong byte"

        payload = backend.workdir / "programs" / "datagram6.bin"
        payload.parent.mkdir(parents=True, exist_ok=True)
        payload.write_bytes(os.urandom(DATAGRAM_SIZE))
        expected = hashlib.sha256(payload.read_bytes()).hexdigest()
        argv = program(backend, "datagram", DATAGRAM)
        with ctx.step(names[3]) as step:
            receiver = backend.spawn(host, [*argv, "receive", there6, str(UDP_PORT)],
                                     name="datagram-receiver6")  # fmt: skip
            tunnel.processes[receiver.name] = receiver
            tunnel.wait_log(receiver, "ready", "the UDP receiver")
            sent = backend.exec(
                client,
                [*argv, "send", there6, str(UDP_PORT), backend.node_path(payload)],
                timeout=30,
            )
            got = last_json(finish(backend, receiver, 25))
            assert got["bytes"] == DATAGRAM_SIZE, f"{host} received {got['bytes']} bytes"
            assert got["sha256"] == expected, "the datagram's content changed on the way"
            assert got["peer"] == here6, f"from {got['peer']}, not {here6}"
            step.detail = f"{got['bytes']} bytes from {got['peer']}, sha256 as sent"
        with ctx.step(names[4]) as step:
            if sent.returncode != 0:
                raise StepFailed(f"no echo: {(sent.stderr or sent.stdout).strip()[-300:]}")
            echo = last_json(sent.stdout)
            assert (echo["bytes"], echo["sha256"]) == (DATAGRAM_SIZE, expected), echo
            assert echo["peer"] == there6, echo
            step.detail = f"{echo['bytes']} bytes from {echo['peer']}, sha256 as sent"

    with ctx.step(names[5]) as step:
        pieces, largest = fragments6(capture)
        for proto, name in ((ICMPV6, "ICMPv6"), (UDP, "UDP")):
            for dst in (here6, there6):
                assert pieces[proto, dst] >= 2, f"{name} fragments to {dst}: {dict(pieces)}"
        assert 0 < largest <= mtu, f"a fragment of {largest} bytes, the tunnel MTU is {mtu}"
        step.detail = (
            ", ".join(
                f"{n} {'ICMPv6' if p == ICMPV6 else 'UDP'} fragments → {d}"
                for (p, d), n in sorted(pieces.items())
            )
            + f"; the largest {largest} bytes"
        )
        ctx.metric("udp6_fragments_to_host", pieces[UDP, there6])
        ctx.metric("udp6_fragments_to_client", pieces[UDP, here6])


def fragments6(path: Path) -> tuple[Counter[tuple[int, str]], int]:
    """IPv6 packets that carry a Fragment header, by (protocol inside, destination), and the
    largest of them in bytes."""
    count: Counter[tuple[int, str]] = Counter()
    largest = 0
    cooked = pcap_file.link_type(path) == dpkt.pcap.DLT_LINUX_SLL
    for raw in pcap_file.records(path):
        kind, packet = (raw[14:16], raw[16:]) if cooked else (raw[12:14], raw[14:])
        if kind != b"\x86\xdd" or len(packet) < 48 or packet[6] != FRAGMENT6:
            continue
        (length,) = struct.unpack("!H", packet[4:6])
        count[packet[40], socket.inet_ntop(socket.AF_INET6, packet[24:40])] += 1
        largest = max(largest, 40 + length)
    return count, largest


def verify(result: Result) -> None:
    assert result.metrics["udp_fragments_to_host"] >= 2, result.metrics
    assert result.metrics["udp_fragments_to_client"] >= 2, result.metrics
    if "udp6_fragments_to_host" in result.metrics:  # a lab without IPv6 records none
        assert result.metrics["udp6_fragments_to_host"] >= 2, result.metrics
        assert result.metrics["udp6_fragments_to_client"] >= 2, result.metrics


SCENARIO = Scenario(
    name="large-packet",
    description=f"a {PING_SIZE}-byte ping and an {DATAGRAM_SIZE}-byte UDP datagram cross whole, "
    "IPv4 and IPv6",
    run=run,
    key_metric="udp_fragments_to_host",
)
