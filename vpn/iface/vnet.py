"""struct virtio_net_hdr: the 10 bytes before every packet on a TUN opened with IFF_VNET_HDR,
saying how the kernel offloaded it (GSO, checksums). Pure: decoding, encoding, checking.

`client_vnet_problem` is the gateway's check of a header a client sent: the kernel acts on these
fields (where to write a checksum, how to cut a super-packet), so only the shapes a Linux TUN
itself produces for an IPv4 or IPv6 packet are let through to it."""

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


# What a client may send: the flags and GSO types a Linux TUN produces for IPv4.
CLIENT_FLAGS = VNET_HDR_F_NEEDS_CSUM | VNET_HDR_F_DATA_VALID
GSO_BY_FRAGS = 0xFFFF  # the kernel's internal marker, never valid on the wire
IPPROTO_TCP = 6
IPPROTO_UDP = 17
_CSUM_OFFSET = {IPPROTO_TCP: 16, IPPROTO_UDP: 6}  # where the checksum sits in the L4 header
_GSO_PROTOCOL = {VNET_HDR_GSO_TCPV4: IPPROTO_TCP, VNET_HDR_GSO_UDP_L4: IPPROTO_UDP}
_GSO_PROTOCOL6 = {VNET_HDR_GSO_TCPV6: IPPROTO_TCP, VNET_HDR_GSO_UDP_L4: IPPROTO_UDP}
_GSO_TCP = frozenset((VNET_HDR_GSO_TCPV4, VNET_HDR_GSO_TCPV6))
_GSO_NAMES = {
    VNET_HDR_GSO_TCPV4: "TCPV4",
    VNET_HDR_GSO_TCPV6: "TCPV6",
    VNET_HDR_GSO_UDP: "UDP (UFO)",
}
IPV6_HEADER_LEN = 40
# virtio_net_hdr then the IPv4 header's first 20 bytes (version/IHL, protocol, addresses), in
# one unpack: the router reads every packet's addresses anyway, so the header costs nothing.
VNET_IPV4 = struct.Struct("=BBHHHHB8xB2x4s4s")


def client_vnet_problem(hdr: VnetHdr, ihl_byte: int, protocol: int, payload: int) -> str | None:
    """Why a client's virtio_net_hdr in front of a `payload`-byte IP packet is refused, or None.

    `ihl_byte` is the packet's first byte (IPv4: version and IHL; IPv6: version 6) and
    `protocol` its IPv4 protocol or IPv6 next header. The router calls this only when flags,
    gso_type or gso_size is non-zero or hdr_len exceeds the packet: with all three zero the
    kernel ignores csum_start, csum_offset and hdr_len beyond that bound. An IPv6 packet must
    carry its TCP or UDP header right after the fixed header (no extension headers), as the
    packets a Linux TUN hands over for offload do.
    """
    ipv6 = ihl_byte >> 4 == 6
    family = "IPv6" if ipv6 else "IPv4"
    by_gso = _GSO_PROTOCOL6 if ipv6 else _GSO_PROTOCOL
    flags, gso_type, hdr_len, gso_size, csum_start, csum_offset = hdr
    if flags & ~CLIENT_FLAGS:
        return f"virtio_net_hdr flags 0x{flags:02x} has bits a client may not set"
    if hdr_len > payload:
        return f"virtio_net_hdr hdr_len {hdr_len} is longer than the {payload}-byte packet"
    gso = gso_type & ~VNET_HDR_GSO_ECN
    if gso == VNET_HDR_GSO_NONE:
        if gso_type:
            return "virtio_net_hdr ECN bit without a GSO type"
        if gso_size:
            return f"virtio_net_hdr gso_size {gso_size} without a GSO type"
    else:
        wanted = by_gso.get(gso)
        if wanted is None:
            name = _GSO_NAMES.get(gso, str(gso))
            return f"virtio_net_hdr gso_type {name} is not allowed for an {family} packet"
        if wanted != protocol:
            return f"virtio_net_hdr gso_type {gso} does not match {family} protocol {protocol}"
        if gso_type & VNET_HDR_GSO_ECN and gso not in _GSO_TCP:
            return "virtio_net_hdr ECN bit on a non-TCP GSO type"
        if gso_size == 0 or gso_size == GSO_BY_FRAGS:
            return f"virtio_net_hdr GSO with gso_size {gso_size}"
        if hdr_len >= payload:
            return (
                f"virtio_net_hdr GSO packet of {payload} bytes has no data after hdr_len {hdr_len}"
            )
    if flags & VNET_HDR_F_NEEDS_CSUM:
        if csum_start != (IPV6_HEADER_LEN if ipv6 else (ihl_byte & 0x0F) * 4):
            return f"virtio_net_hdr csum_start {csum_start} is not the L4 header"
        if _CSUM_OFFSET.get(protocol) != csum_offset:
            wrong = f"is wrong for {family} protocol {protocol}"
            return f"virtio_net_hdr csum_offset {csum_offset} {wrong}"
        if csum_start + csum_offset + 2 > payload:
            return (
                f"virtio_net_hdr checksum at {csum_start}+{csum_offset} lies beyond the "
                f"{payload}-byte packet"
            )
    return None
