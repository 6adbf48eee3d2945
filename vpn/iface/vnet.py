"""struct virtio_net_hdr: the 10 bytes before every packet on a TUN opened with IFF_VNET_HDR,
saying how the kernel offloaded it (GSO, checksums). Pure: decoding, encoding, checking."""

from __future__ import annotations

import struct
from typing import NamedTuple

# struct virtio_net_hdr (without num_buffers): what precedes every packet on a vnet_hdr tun.
VNET_HDR_LEN = 10
PLAIN_VNET_HDR = bytes(VNET_HDR_LEN)  # "no offload": prepend this to a plain packet
VNET_HDR_F_NEEDS_CSUM = 1
VNET_HDR_F_DATA_VALID = 2
VNET_HDR_F_RSC_INFO = 4
VNET_HDR_GSO_NONE = 0
VNET_HDR_GSO_TCPV4 = 1
VNET_HDR_GSO_UDP = 3
VNET_HDR_GSO_TCPV6 = 4
VNET_HDR_GSO_UDP_L4 = 5
VNET_HDR_GSO_ECN = 0x80
_VNET_STRUCT = struct.Struct("=BBHHHH")  # host order, as the kernel uses by default
_GSO_TYPES = frozenset(
    (
        VNET_HDR_GSO_NONE,
        VNET_HDR_GSO_TCPV4,
        VNET_HDR_GSO_UDP,
        VNET_HDR_GSO_TCPV6,
        VNET_HDR_GSO_UDP_L4,
    )
)
_VNET_FLAGS = VNET_HDR_F_NEEDS_CSUM | VNET_HDR_F_DATA_VALID | VNET_HDR_F_RSC_INFO


class VnetHdr(NamedTuple):
    """struct virtio_net_hdr: how the kernel offloaded (or wants us to offload) a packet."""

    flags: int
    gso_type: int
    hdr_len: int
    gso_size: int
    csum_start: int
    csum_offset: int


def parse_vnet_hdr(buf: bytes | bytearray | memoryview) -> VnetHdr:
    """Decode the 10-byte virtio_net_hdr at the start of `buf`."""
    if len(buf) < VNET_HDR_LEN:
        raise ValueError(f"virtio_net_hdr needs {VNET_HDR_LEN} bytes, got {len(buf)}")
    return VnetHdr(*_VNET_STRUCT.unpack_from(buf))


def pack_vnet_hdr(hdr: VnetHdr) -> bytes:
    """Encode a virtio_net_hdr (the inverse of parse_vnet_hdr)."""
    return _VNET_STRUCT.pack(*hdr)


def vnet_hdr_problem(hdr: VnetHdr, payload: int) -> str | None:
    """Why the kernel refuses this header in front of a `payload`-byte packet, or None."""
    if hdr.flags & ~_VNET_FLAGS:
        return f"virtio_net_hdr flags 0x{hdr.flags:02x} has unknown bits"
    if hdr.gso_type & ~VNET_HDR_GSO_ECN not in _GSO_TYPES:
        return f"virtio_net_hdr gso_type {hdr.gso_type} is not a known GSO type"
    if hdr.gso_type & ~VNET_HDR_GSO_ECN and hdr.gso_size == 0:
        return "virtio_net_hdr asks for segmentation (gso_type set) with gso_size 0"
    if hdr.hdr_len > payload:
        return f"virtio_net_hdr hdr_len {hdr.hdr_len} is longer than the {payload}-byte packet"
    if hdr.flags & VNET_HDR_F_NEEDS_CSUM and hdr.csum_start + hdr.csum_offset + 2 > payload:
        return (
            f"virtio_net_hdr checksum at {hdr.csum_start}+{hdr.csum_offset} lies beyond the "
            f"{payload}-byte packet"
        )
    return None
