"""Why the kernel refuses a write to a TUN/TAP device, in words a person can act on.

The hot loops call os.write on `Tun.fd` directly; this runs only on the slow path, after a
write already failed (or in the lab, to show the rules).
"""

from __future__ import annotations

import errno
import os

from vpn.errors import TunError
from vpn.iface.tun import Tun
from vpn.iface.vnet import VNET_HDR_LEN, parse_vnet_hdr, vnet_hdr_problem

ETH_HLEN = 14
MAX_PACKET = 65535  # the largest IP packet; longer writes are cut or refused (ENOBUFS)


def _looks_like_hex_text(data: bytes) -> bool:
    head = data[:8]
    return len(head) >= 2 and all(c in b"0123456789abcdefABCDEF \t:\n" for c in head)


def check_packet(
    packet: bytes | bytearray | memoryview, *, vnet_hdr: bool = False, tap: bool = False
) -> str | None:
    """Why a write of `packet` to a tun opened this way is refused at write time, or None.

    Only what the kernel checks in write(): a packet that passes may still be dropped later
    (bad checksums, bad IP header) without any error reaching the writer.
    """
    data = memoryview(packet).cast("B") if not isinstance(packet, bytes) else packet
    size = len(data)
    if size == 0:
        return (
            "zero-length write: one write() carries exactly one whole packet, and an empty one "
            "is refused (EINVAL)"
        )
    if vnet_hdr:
        if size < VNET_HDR_LEN:
            return (
                f"only {size} bytes: with IFF_VNET_HDR each write starts with a "
                f"{VNET_HDR_LEN}-byte virtio_net_hdr (prepend PLAIN_VNET_HDR to a plain packet)"
            )
        problem = vnet_hdr_problem(parse_vnet_hdr(data), size - VNET_HDR_LEN)
        if problem:
            return problem
        data = data[VNET_HDR_LEN:]
        size -= VNET_HDR_LEN
        if size == 0:
            return "nothing after the virtio_net_hdr: the packet itself is missing"
    if tap:
        if size < ETH_HLEN:
            return f"{size} bytes: a TAP frame needs at least a {ETH_HLEN}-byte Ethernet header"
    else:
        first = data[0]
        if first >> 4 not in (4, 6):
            hint = (
                f"first byte 0x{first:02x}: with IFF_NO_PI the packet must start with 0x4_ "
                "(IPv4) or 0x6_ (IPv6); a hex dump reversed without offsets (or with offsets "
                "not starting at 0) or the hex text itself written instead of the bytes gives this"
            )
            if _looks_like_hex_text(bytes(data[:8])):
                hint += (
                    " — these bytes look like hex text: convert it first, with `xxd -r` for an "
                    "xxd dump (offset column first), `xxd -r -p` for plain hex digits"
                )
            elif first == 0:
                hint += " — it starts with zero bytes, as `xxd -r` pads up to the first offset"
            return hint
    return None


def explain_write_error(err: OSError, packet: bytes | bytearray | memoryview, *, tun: Tun) -> str:
    """Why the kernel refused a write to `tun`, in words a person can act on."""
    code = err.errno
    where = f"write to {tun.name}"
    if code == errno.EIO:
        return f"{where}: input/output error — interface is down: ip link set {tun.name} up"
    if code == errno.EBADFD:
        return (
            f"{where}: file descriptor in bad state — no interface is attached to this fd: "
            "TUNSETIFF did not succeed (an EPERM from it was ignored?)"
        )
    if code in (errno.ENOBUFS, errno.EMSGSIZE):
        return (
            f"{where}: {err.strerror} — {len(packet)} bytes in one write is too long: one write "
            f"carries one packet (an IP packet holds at most {MAX_PACKET} bytes); write packets "
            "one by one"
        )
    if code in (errno.EINVAL, errno.EFAULT):
        reason = check_packet(packet, vnet_hdr=tun.vnet_hdr, tap=tun.tap)
        if reason:
            return f"{where} refused ({errno.errorcode.get(code, code)}): {reason}"
        first = f", first byte 0x{bytes(packet[:1]).hex()}" if len(packet) else ""
        return (
            f"{where}: {err.strerror} — the kernel refused a {len(packet)}-byte packet{first} "
            "that passes the known write-time checks"
        )
    if code == errno.EBADF:
        return f"{where}: bad file descriptor — the tun was already closed"
    return f"{where}: {err.strerror}"


def write_packet(tun: Tun, packet: bytes | bytearray | memoryview) -> None:
    """Write one packet; on failure raise TunError saying why (not for the hot loop)."""
    try:
        os.write(tun.fd, packet)
    except OSError as err:
        raise TunError(err.errno or errno.EIO, explain_write_error(err, packet, tun=tun)) from err
