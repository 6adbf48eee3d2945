"""What crossed a segment: a pcap read with lab.pcap, its frames decoded with dpkt, and judged
for what an eavesdropper sees."""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import dpkt

from lab import pcap


@dataclass
class Verdict:
    packets: int = 0
    tls: int = 0  # TCP segments to or from the VPN port
    tls_payload_bytes: int = 0
    tls_records: Counter[int] = field(default_factory=Counter)  # content type → count
    protocols: Counter[str] = field(default_factory=Counter)
    others: list[str] = field(default_factory=list)  # IP packets that are not the tunnel
    leaks: list[str] = field(default_factory=list)  # secrets seen in clear
    families: Counter[int] = field(default_factory=Counter)  # IP version → users' packets
    tls_families: Counter[int] = field(default_factory=Counter)  # IP version → tunnel segments

    @property
    def only_tunnel(self) -> bool:
        return not self.others and not self.leaks


def frames(path: Path) -> Iterable[dpkt.ethernet.Ethernet | dpkt.sll.SLL]:
    """Every frame of a capture, decoded from its link layer (Ethernet or Linux cooked)."""
    link = pcap.link_type(path)
    for raw in pcap.records(path):
        if link == dpkt.pcap.DLT_LINUX_SLL:
            yield dpkt.sll.SLL(raw)
        elif link == dpkt.pcap.DLT_EN10MB:
            yield dpkt.ethernet.Ethernet(raw)
        else:
            raise ValueError(f"{path}: unsupported link type {link}")


def ip_packets(path: Path) -> Iterable[dpkt.ip.IP]:
    """What each frame carries (IPv4 packets, and ARP or IPv6 objects the caller may skip)."""
    for frame in frames(path):
        yield frame.data


def judge(path: Path, port: int, secrets: dict[str, bytes]) -> Verdict:
    """Count the tunnel's TLS segments; list any other IP packet and any secret in clear."""
    verdict = Verdict()
    raw = path.read_bytes()
    for label, secret in secrets.items():
        if secret and secret in raw:
            verdict.leaks.append(f"{label} ({secret.hex()}) appears in clear")
    for packet in ip_packets(path):
        verdict.packets += 1
        if isinstance(packet, dpkt.ip.IP):
            src, dst = socket.inet_ntoa(packet.src), socket.inet_ntoa(packet.dst)
            protocol, version = packet.p, 4
            if protocol == IGMP:
                verdict.protocols["IGMP"] += 1  # the segment's own multicast membership
                continue
        elif isinstance(packet, dpkt.ip6.IP6):
            src = socket.inet_ntop(socket.AF_INET6, packet.src)
            dst = socket.inet_ntop(socket.AF_INET6, packet.dst)
            protocol, version = packet.p, 6  # after extension headers (MLD: hop-by-hop)
            if protocol == ICMP6 and _link_control(packet.data):
                verdict.protocols["ICMPv6 ND/MLD"] += 1  # the segment's own neighbour discovery
                continue
        else:
            verdict.protocols[type(packet).__name__] += 1  # ARP
            continue
        verdict.families[version] += 1  # what the segment's users sent: link control left out
        segment = packet.data
        if isinstance(segment, dpkt.tcp.TCP) and port in (segment.sport, segment.dport):
            verdict.tls += 1
            verdict.tls_families[version] += 1
            verdict.protocols["TLS/TCP"] += 1
            payload = bytes(segment.data)
            verdict.tls_payload_bytes += len(payload)
            if len(payload) >= 5 and payload[1:3] == b"\x03\x03":
                verdict.tls_records[payload[0]] += 1
            continue
        name = {1: "ICMP", 6: "TCP", 17: "UDP", ICMP6: "ICMPv6"}.get(protocol, f"proto {protocol}")
        verdict.protocols[name] += 1
        verdict.others.append(f"{name} {src} → {dst}")
    return verdict


TLS_APPLICATION_DATA = 23


def assert_only_tunnel(path: Path, port: int, secrets: dict[str, bytes]) -> Verdict:
    """judge(), asserting that the capture holds the tunnel's TLS application data and nothing
    else of the segment's users, and no secret in clear (an AssertionError fails the step)."""
    verdict = judge(path, port, secrets)
    assert verdict.tls > 0, f"no TLS segments captured ({verdict.packets} packets)"
    assert not verdict.others, f"not tunnelled: {', '.join(verdict.others[:5])}"
    assert not verdict.leaks, "; ".join(verdict.leaks)
    assert verdict.tls_records[TLS_APPLICATION_DATA] > 0, "no TLS application data records"
    return verdict


ICMP6 = 58
IGMP = 2  # IPv4's MLD: a node's membership reports when its interface comes up
# Router and neighbour solicitation/advertisement, redirect, MLD: a segment's own control
# traffic, sent by every IPv6 node on a link; never traffic of the tunnel's users.
LINK_CONTROL = frozenset({130, 131, 132, 133, 134, 135, 136, 137, 143})


def _link_control(message: object) -> bool:
    return isinstance(message, dpkt.icmp6.ICMP6) and message.type in LINK_CONTROL
