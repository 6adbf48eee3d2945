"""The virtio_net_hdr checks at each bound: the checksum's last byte at the packet's end, the
header exactly as long as the packet, ECN only with TCP GSO, and the messages that say why."""

from __future__ import annotations

import pytest

from vpn.iface import vnet
from vpn.iface.vnet import VnetHdr, client_vnet_problem, vnet_hdr_problem

CSUM = vnet.VNET_HDR_F_NEEDS_CSUM


def test_kernel_check_bounds() -> None:
    tcp_csum = VnetHdr(CSUM, 0, 0, 0, 20, 16)
    assert vnet_hdr_problem(tcp_csum, 38) is None  # bytes 36-37: the packet's last two
    assert vnet_hdr_problem(tcp_csum, 37) == (
        "virtio_net_hdr checksum at 20+16 lies beyond the 37-byte packet"
    )
    assert vnet_hdr_problem(VnetHdr(CSUM, 0, 0, 0, 36, 0), 38) is None
    assert vnet_hdr_problem(VnetHdr(0, vnet.VNET_HDR_GSO_ECN, 0, 0, 0, 0), 40) is None
    assert vnet_hdr_problem(VnetHdr(0, vnet.VNET_HDR_GSO_TCPV4, 0, 0, 0, 0), 40) == (
        "virtio_net_hdr asks for segmentation (gso_type set) with gso_size 0"
    )
    assert vnet_hdr_problem(VnetHdr(0, 0, 40, 0, 0, 0), 40) is None
    assert vnet_hdr_problem(VnetHdr(0, 0, 41, 0, 0, 0), 40) is not None


def test_parse_needs_ten_bytes() -> None:
    with pytest.raises(ValueError, match=r"^virtio_net_hdr needs 10 bytes, got 9$"):
        vnet.parse_vnet_hdr(bytes(9))


def test_client_check_bounds() -> None:
    assert client_vnet_problem(VnetHdr(CSUM, 0, 0, 0, 20, 16), 0x45, 6, 38) is None
    assert client_vnet_problem(VnetHdr(CSUM, 0, 0, 0, 20, 16), 0x45, 6, 37) == (
        "virtio_net_hdr checksum at 20+16 lies beyond the 37-byte packet"
    )
    assert client_vnet_problem(VnetHdr(CSUM, 0, 0, 0, 20, 6), 0x45, 17, 28) is None
    assert client_vnet_problem(VnetHdr(CSUM, 0, 0, 0, 20, 6), 0x45, 17, 27) is not None
    assert client_vnet_problem(VnetHdr(0, 0, 0, 0, 24, 9), 0x45, 6, 20) is None  # no csum asked
    assert client_vnet_problem(VnetHdr(0, 0, 20, 0, 0, 0), 0x45, 6, 20) is None  # hdr_len == len
    assert client_vnet_problem(VnetHdr(0, 0, 21, 0, 0, 0), 0x45, 6, 20) == (
        "virtio_net_hdr hdr_len 21 is longer than the 20-byte packet"
    )


def test_client_gso_rules_and_their_messages() -> None:
    tcp_ecn = vnet.VNET_HDR_GSO_TCPV4 | vnet.VNET_HDR_GSO_ECN
    assert client_vnet_problem(VnetHdr(0, tcp_ecn, 40, 1448, 0, 0), 0x45, 6, 2000) is None
    udp_ecn = vnet.VNET_HDR_GSO_UDP_L4 | vnet.VNET_HDR_GSO_ECN
    assert client_vnet_problem(VnetHdr(0, udp_ecn, 28, 1400, 0, 0), 0x45, 17, 2000) == (
        "virtio_net_hdr ECN bit on a non-TCP GSO type"
    )
    assert client_vnet_problem(VnetHdr(0, 7, 28, 1400, 0, 0), 0x45, 17, 2000) == (
        "virtio_net_hdr gso_type 7 is not allowed for an IPv4 packet"
    )
    assert client_vnet_problem(VnetHdr(0, 4, 28, 1400, 0, 0), 0x45, 6, 2000) == (
        "virtio_net_hdr gso_type TCPV6 is not allowed for an IPv4 packet"
    )
