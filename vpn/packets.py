"""Building and reading IPv4 and IPv6 packets by hand (pure): for the lab's TUN experiments,
spoofing tests and anything that writes crafted packets into a TUN device or a raw socket."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

IPPROTO_ICMP = 1
IPPROTO_UDP = 17
ICMP_ECHO_REPLY = 0
ICMP_ECHO_REQUEST = 8
IPPROTO_ICMPV6 = 58
ICMPV6_PACKET_TOO_BIG = 2
ICMPV6_ECHO_REQUEST = 128
ICMPV6_ECHO_REPLY = 129
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6 = struct.Struct("!IHBB16s16s")


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    words: tuple[int, ...] = struct.unpack(f"!{len(data) // 2}H", data)
    total = sum(words)
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def ipv4(
    source: str, destination: str, protocol: int, payload: bytes, *, ident: int = 1, ttl: int = 64
) -> bytes:
    header = _IPV4.pack(
        0x45, 0, 20 + len(payload), ident, 0, ttl, protocol, 0,
        ipaddress.IPv4Address(source).packed, ipaddress.IPv4Address(destination).packed,
    )  # fmt: skip
    return header[:10] + struct.pack("!H", checksum(header)) + header[12:] + payload


def icmp_echo(source: str, destination: str, *, ident: int = 0x1234, seq: int = 1,
              data: bytes = b"vpnlab", reply: bool = False) -> bytes:  # fmt: skip
    kind = ICMP_ECHO_REPLY if reply else ICMP_ECHO_REQUEST
    body = struct.pack("!BBHHH", kind, 0, 0, ident, seq) + data
    body = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
    return ipv4(source, destination, IPPROTO_ICMP, body)


def udp(source: str, destination: str, sport: int, dport: int, data: bytes) -> bytes:
    """A UDP datagram in IPv4 (UDP checksum 0: optional in IPv4)."""
    return ipv4(
        source,
        destination,
        IPPROTO_UDP,
        struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data,
    )


def checksum6(source: str, destination: str, protocol: int, payload: bytes) -> int:
    """The checksum of an IPv6 upper-layer payload (ICMPv6, UDP, TCP) over the pseudo-header
    of RFC 8200 §8.1: source, destination, upper-layer length, next header. Zero over a
    payload that carries its right checksum."""
    pseudo = (
        ipaddress.IPv6Address(source).packed
        + ipaddress.IPv6Address(destination).packed
        + struct.pack("!IxxxB", len(payload), protocol)
    )
    return checksum(pseudo + payload)


def ipv6(
    source: str, destination: str, next_header: int, payload: bytes, *, hops: int = 64
) -> bytes:
    src, dst = ipaddress.IPv6Address(source).packed, ipaddress.IPv6Address(destination).packed
    return _IPV6.pack(6 << 28, len(payload), next_header, hops, src, dst) + payload


def udp6(source: str, destination: str, sport: int, dport: int, data: bytes) -> bytes:
    """A UDP datagram in IPv6, with its checksum (mandatory in IPv6)."""
    body = struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data
    csum = checksum6(source, destination, IPPROTO_UDP, body) or 0xFFFF
    return ipv6(source, destination, IPPROTO_UDP, body[:6] + struct.pack("!H", csum) + body[8:])


def icmpv6_echo(source: str, destination: str, *, ident: int = 0x1234, seq: int = 1,
                data: bytes = b"vpnlab") -> bytes:  # fmt: skip
    body = struct.pack("!BBHHH", ICMPV6_ECHO_REQUEST, 0, 0, ident, seq) + data
    csum = checksum6(source, destination, IPPROTO_ICMPV6, body)
    return ipv6(source, destination, IPPROTO_ICMPV6, body[:2] + struct.pack("!H", csum) + body[4:])


@dataclass(frozen=True)
class Summary:
    version: int
    source: str
    destination: str
    protocol: int
    length: int
    icmp_type: int | None = None

    def __str__(self) -> str:
        kind = {IPPROTO_ICMP: "ICMP", IPPROTO_UDP: "UDP", 6: "TCP"}.get(
            self.protocol, str(self.protocol)
        )
        extra = f" type {self.icmp_type}" if self.icmp_type is not None else ""
        route = f"{self.source} → {self.destination}"
        return f"IPv{self.version} {route} {kind}{extra} {self.length} bytes"


def summarize(packet: bytes) -> Summary:
    """What a packet read from a TUN is, in one line (IPv4 only; raises ValueError otherwise)."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        raise ValueError(f"not an IPv4 packet (first byte 0x{packet[:1].hex() or '--'})")
    _, _, length, _, _, _, proto, _, src, dst = _IPV4.unpack_from(packet)
    header = (packet[0] & 0x0F) * 4
    icmp_type = packet[header] if proto == IPPROTO_ICMP and len(packet) > header else None
    return Summary(
        4,
        str(ipaddress.IPv4Address(src)),
        str(ipaddress.IPv4Address(dst)),
        proto,
        length,
        icmp_type,
    )
