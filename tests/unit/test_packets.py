"""vpn/packets.py against an independent reader (dpkt) and the RFC 1071 example: every field
the builders write, every checksum valid, and the one-line summaries exactly."""

from __future__ import annotations

import struct

import dpkt
import pytest

from vpn import packets


def test_checksum_of_the_rfc_1071_example() -> None:
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert packets.checksum(data) == 0x220D
    assert packets.checksum(data + struct.pack("!H", 0x220D)) == 0  # verifies to zero


def test_checksum_pads_an_odd_length_and_folds_every_carry() -> None:
    assert packets.checksum(b"\x01") == packets.checksum(b"\x01\x00") == 0xFEFF
    assert packets.checksum(b"\xff\xff" * 3) == 0
    assert packets.checksum(b"\xff\xfe\x00\x03") == 0xFFFD  # 0xfffe + 3 carries once
    assert packets.checksum(b"") == 0xFFFF


def test_ipv4_header_fields_and_checksum() -> None:
    raw = packets.ipv4("10.0.0.1", "192.168.60.5", 17, b"payload", ident=0x4242, ttl=7)
    ip = dpkt.ip.IP(raw)
    assert (ip.v, ip.hl, ip.tos, ip.len, ip.id) == (4, 5, 0, 27, 0x4242)
    assert (ip.df, ip.mf, ip.offset) == (0, 0, 0)
    assert (ip.ttl, ip.p, ip.src, ip.dst) == (7, 17, bytes([10, 0, 0, 1]), bytes([192, 168, 60, 5]))
    assert packets.checksum(raw[:20]) == 0 and ip.sum != 0
    assert raw[20:] == b"payload"
    default = dpkt.ip.IP(packets.ipv4("10.0.0.1", "10.0.0.2", 1, b""))
    assert (default.id, default.ttl, default.len) == (1, 64, 20)


@pytest.mark.parametrize("reply", [False, True])
def test_icmp_echo(reply: bool) -> None:
    raw = packets.icmp_echo("10.0.0.1", "10.0.0.2", ident=0xBEEF, seq=9, data=b"abc", reply=reply)
    ip = dpkt.ip.IP(raw)
    icmp = ip.data
    assert ip.p == packets.IPPROTO_ICMP and isinstance(icmp, dpkt.icmp.ICMP)
    assert (icmp.type, icmp.code) == ((0 if reply else 8), 0)
    assert (icmp.data.id, icmp.data.seq, icmp.data.data) == (0xBEEF, 9, b"abc")
    assert packets.checksum(raw[20:]) == 0 and icmp.sum != 0
    plain = dpkt.ip.IP(packets.icmp_echo("10.0.0.1", "10.0.0.2")).data
    assert (plain.type, plain.data.id, plain.data.seq, plain.data.data) == (8, 0x1234, 1, b"vpnlab")


def test_udp() -> None:
    raw = packets.udp("10.0.0.1", "10.0.0.2", 1234, 9999, b"hello")
    ip = dpkt.ip.IP(raw)
    assert ip.p == packets.IPPROTO_UDP and ip.len == 20 + 8 + 5
    u = ip.data
    assert (u.sport, u.dport, u.ulen, u.sum, u.data) == (1234, 9999, 13, 0, b"hello")


def test_summaries_of_each_protocol() -> None:
    ping = packets.summarize(packets.icmp_echo("10.0.0.1", "10.0.0.2", data=b"x" * 10))
    assert ping == packets.Summary(4, "10.0.0.1", "10.0.0.2", 1, 38, 8)
    assert str(ping) == "IPv4 10.0.0.1 → 10.0.0.2 ICMP type 8 38 bytes"
    datagram = packets.summarize(packets.udp("10.0.0.3", "10.0.0.4", 1, 2, b""))
    assert datagram.icmp_type is None
    assert str(datagram) == "IPv4 10.0.0.3 → 10.0.0.4 UDP 28 bytes"
    tcp = packets.summarize(packets.ipv4("10.0.0.5", "10.0.0.6", 6, bytes(20)))
    assert str(tcp) == "IPv4 10.0.0.5 → 10.0.0.6 TCP 40 bytes"
    other = packets.summarize(packets.ipv4("10.0.0.5", "10.0.0.6", 47, b""))
    assert str(other) == "IPv4 10.0.0.5 → 10.0.0.6 47 20 bytes"


def test_summary_reads_the_icmp_type_after_ip_options() -> None:
    header = bytearray(packets.ipv4("10.0.0.1", "10.0.0.2", 1, b"")[:20])
    header[0] = 0x46  # IHL 6: four bytes of options before the ICMP header
    packet = bytes(header) + b"\x01\x01\x01\x01" + b"\x00\x00"
    assert packets.summarize(packet).icmp_type == 0
    assert packets.summarize(bytes(header) + b"\x01\x01\x01\x01").icmp_type is None  # cut


@pytest.mark.parametrize(
    ("packet", "shown"),
    [(b"", "--"), (b"\x45" * 19, "45"), (b"\x60" + bytes(39), "60")],
    ids=["empty", "short", "IPv6"],
)
def test_summary_refuses_what_is_not_ipv4(packet: bytes, shown: str) -> None:
    with pytest.raises(ValueError, match=rf"^not an IPv4 packet \(first byte 0x{shown}\)$"):
        packets.summarize(packet)
