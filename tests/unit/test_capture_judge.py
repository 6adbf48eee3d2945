"""The capture judge of the scenarios: what counts as the tunnel, as a leak, as link control —
for IPv4 and IPv6 frames alike (real frames built with dpkt, written as a real pcap)."""

from __future__ import annotations

import socket
from pathlib import Path

import dpkt
import pytest

from scenarios.pcap import assert_only_tunnel, judge

PORT = 4433
A6, B6 = "fd00:9::5", "fd00:9::11"
A4, B4 = "10.9.0.5", "10.9.0.11"


def _ether(ip: dpkt.Packet, kind: int) -> bytes:
    return bytes(dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6, type=kind, data=ip))


def _ip6(src: str, dst: str, nxt: int, payload: bytes, hlim: int = 64) -> dpkt.ip6.IP6:
    packet = dpkt.ip6.IP6(
        src=socket.inet_pton(socket.AF_INET6, src), dst=socket.inet_pton(socket.AF_INET6, dst),
        nxt=nxt, hlim=hlim, plen=len(payload), data=payload,
    )  # fmt: skip
    packet.extension_hdrs = {}
    return dpkt.ip6.IP6(bytes(packet))


def tls6(data: bytes = b"\x17\x03\x03\x00\x05hello") -> bytes:
    segment = dpkt.tcp.TCP(sport=50000, dport=PORT, flags=dpkt.tcp.TH_ACK, data=data)
    return _ether(_ip6(A6, B6, 6, bytes(segment)), dpkt.ethernet.ETH_TYPE_IP6)


def tls4() -> bytes:
    segment = dpkt.tcp.TCP(sport=50000, dport=PORT, flags=dpkt.tcp.TH_ACK, data=b"\x17\x03\x03")
    ip = dpkt.ip.IP(src=socket.inet_aton(A4), dst=socket.inet_aton(B4), p=6, data=segment)
    return _ether(ip, dpkt.ethernet.ETH_TYPE_IP)


def mld_report() -> bytes:
    """MLDv2 report: a hop-by-hop header (router alert) before the ICMPv6 message, type 143."""
    hop_by_hop = bytes([58, 0, 5, 2, 0, 0, 1, 0])
    message = bytes([143, 0, 0, 0, 0, 0, 0, 0])
    return _ether(_ip6("fe80::1", "ff02::16", 0, hop_by_hop + message, 1), 0x86DD)


def igmp_report() -> bytes:
    """IGMPv3 membership report from 0.0.0.0, as a node sends when its interface comes up."""
    report = bytes([0x22, 0, 0, 0, 0, 0, 0, 0])
    ip = dpkt.ip.IP(src=bytes(4), dst=socket.inet_aton("224.0.0.22"), p=2, ttl=1, data=report)
    return _ether(ip, dpkt.ethernet.ETH_TYPE_IP)


def echo6(payload: bytes = b"secret!!") -> bytes:
    message = bytes([128, 0, 0, 0, 0, 1, 0, 1]) + payload
    return _ether(_ip6(A6, "fd00:60::5", 58, message), dpkt.ethernet.ETH_TYPE_IP6)


def capture(tmp_path: Path, frames: list[bytes]) -> Path:
    path = tmp_path / "c.pcap"
    with path.open("wb") as out:
        writer = dpkt.pcap.Writer(out)
        for frame in frames:
            writer.writepkt(frame, ts=0)
    return path


def test_tls_over_ipv6_is_the_tunnel_and_link_control_is_counted_apart(tmp_path: Path) -> None:
    frames = [tls6(), mld_report(), igmp_report(), tls6()]
    verdict = judge(capture(tmp_path, frames), PORT, {})
    assert verdict.tls == 2 and verdict.tls_families == {6: 2}
    assert verdict.families == {6: 2}  # the MLD and IGMP reports are the link's, not a user's
    assert verdict.protocols["ICMPv6 ND/MLD"] == 1 and verdict.protocols["IGMP"] == 1
    assert not verdict.others
    assert verdict.tls_records[23] == 2


def test_an_ipv6_echo_on_the_wire_is_not_the_tunnel_and_its_payload_leaks(tmp_path: Path) -> None:
    path = capture(tmp_path, [tls6(), echo6()])
    verdict = judge(path, PORT, {"ping payload": b"secret!!"})
    assert verdict.others == [f"ICMPv6 {A6} → fd00:60::5"]
    assert verdict.leaks and "ping payload" in verdict.leaks[0]
    with pytest.raises(AssertionError, match="not tunnelled"):
        assert_only_tunnel(path, PORT, {})


def test_families_are_counted_per_ip_version(tmp_path: Path) -> None:
    verdict = judge(capture(tmp_path, [tls4(), tls6(), tls6()]), PORT, {})
    assert verdict.families == {4: 1, 6: 2} and verdict.tls_families == {4: 1, 6: 2}


def test_only_tunnel_wants_tls_application_data(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="no TLS segments"):
        assert_only_tunnel(capture(tmp_path, [mld_report()]), PORT, {})
    handshake_only = tls6(b"\x16\x03\x03\x00\x05hello")
    with pytest.raises(AssertionError, match="no TLS application data"):
        assert_only_tunnel(capture(tmp_path, [handshake_only]), PORT, {})
    assert assert_only_tunnel(capture(tmp_path, [tls6()]), PORT, {}).tls == 1
