"""TUN/TAP devices: open one through /dev/net/tun, and explain why the kernel refuses a write.

The hot loop calls os.read/os.write on `Tun.fd` directly; everything here that inspects a packet
runs only on the slow path, after a write already failed (or in the lab, to show the rules).
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
from dataclasses import dataclass
from typing import NamedTuple

# <linux/if_tun.h>: flags for TUNSETIFF (struct ifreq.ifr_flags).
IFF_TUN = 0x0001
IFF_TAP = 0x0002
IFF_NAPI = 0x0010
IFF_NAPI_FRAGS = 0x0020
IFF_NO_CARRIER = 0x0040
IFF_MULTI_QUEUE = 0x0100
IFF_NO_PI = 0x1000
IFF_ONE_QUEUE = 0x2000
IFF_VNET_HDR = 0x4000

# Offloads the reader of a vnet_hdr tun can take (TUNSETOFFLOAD).
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08
TUN_F_USO4 = 0x20
TUN_F_USO6 = 0x40
OFFLOAD_FULL = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_USO4 | TUN_F_USO6
OFFLOAD_TCP = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6  # older kernels: no UDP segmentation

# ioctl numbers: _IOW/_IOR('T', nr, int). The direction bits sit at the top of the number; mips,
# powerpc and sparc put "write" and "read" the other way round.
_SWAPPED = os.uname().machine.startswith(("mips", "ppc", "powerpc", "sparc"))
_IOC_WRITE, _IOC_READ = (0x80000000, 0x40000000) if _SWAPPED else (0x40000000, 0x80000000)


def _ioc(direction: int, nr: int, size: int = 4) -> int:
    return direction | (size << 16) | (ord("T") << 8) | nr


TUNSETIFF = _ioc(_IOC_WRITE, 202)
TUNGETFEATURES = _ioc(_IOC_READ, 207)
TUNSETOFFLOAD = _ioc(_IOC_WRITE, 208)
TUNSETVNETHDRSZ = _ioc(_IOC_WRITE, 216)

IFNAMSIZ = 16
DEFAULT_PATH = "/dev/net/tun"

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

ETH_HLEN = 14
MAX_PACKET = 65535  # the largest IP packet; longer writes are cut or refused (ENOBUFS)

_IFREQ = struct.Struct("16sH22x")  # struct ifreq: name, then ifr_flags in a 24-byte union

_CAP_HINT = "needs root or CAP_NET_ADMIN (docker: --cap-add NET_ADMIN)"


class TunError(OSError):
    """Opening or using a TUN device failed; str() says what happened, why and what to do."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)

    def __str__(self) -> str:
        return str(self.strerror)


@dataclass
class Tun:
    """An open TUN/TAP device; closing the fd removes the interface (unless made persistent)."""

    fd: int
    name: str
    tap: bool = False
    vnet_hdr: bool = False
    offload: int = 0  # TUN_F_* flags the kernel accepted; 0 = no offload
    multi_queue: bool = False

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def __enter__(self) -> Tun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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


def _name_problem(name: str) -> str | None:
    """Why the kernel would refuse `name` as an interface name (dev_valid_name), or None."""
    raw = name.encode()
    if len(raw) >= IFNAMSIZ:
        return (
            f"interface name {name!r} is {len(raw)} bytes; Linux allows at most "
            f"{IFNAMSIZ - 1}: pick a shorter --tun name"
        )
    if name in (".", "..") or any(c in name for c in "/:") or any(c.isspace() for c in name):
        return (
            f"interface name {name!r} is not valid: no '/', ':' or spaces, not '.' or '..' "
            "— pick another --tun name"
        )
    if name.count("%") > 1 or ("%" in name and "%d" not in name):
        return f"interface name {name!r}: the only pattern allowed is one '%d' (e.g. tun%d)"
    return None


def _open_error(path: str, err: OSError) -> TunError:
    code = err.errno or errno.EIO
    if code == errno.ENOENT:
        why = (
            f"open {path}: no such file — the TUN device node is missing. In a container: start "
            "it with --device /dev/net/tun (compose: devices: [/dev/net/tun]); on a host: "
            "modprobe tun"
        )
    elif code in (errno.ENXIO, errno.ENODEV):
        why = (
            f"open {path}: no such device — the tun driver is not loaded: modprobe tun on the "
            "host (then start the container with --device /dev/net/tun)"
        )
    elif code in (errno.EPERM, errno.EACCES):
        why = f"open {path}: permission denied — creating a TUN device {_CAP_HINT}"
    else:
        why = f"open {path}: {err.strerror}"
    return TunError(code, why)


def _exists(name: str) -> bool:
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


def _setiff_error(name: str, flags: int, err: OSError) -> TunError:
    code = err.errno or errno.EIO
    kind = "tap" if flags & IFF_TAP else "tun"
    if code in (errno.EPERM, errno.EACCES):
        why = (
            f"TUNSETIFF {name}: operation not permitted — creating or attaching a {kind} device "
            f"{_CAP_HINT}; a persistent device owned by another user refuses too"
        )
    elif code == errno.EBUSY:
        why = (
            f"TUNSETIFF {name}: device busy — interface {name} already exists and is not a free "
            f"{kind} device (another process holds it); pick another --tun name"
        )
    elif code == errno.EINVAL and "%" not in name and _exists(name):
        why = (
            f"TUNSETIFF {name}: invalid argument — interface {name} already exists and is not a "
            f"free {kind} device (another kind of link, or a tun/tap opened with other flags); "
            "pick another --tun name"
        )
    elif code == errno.EINVAL:
        why = (
            f"TUNSETIFF {name}: invalid argument — the kernel refused name {name!r} with flags "
            f"0x{flags:04x} (see tun_features() for what this kernel supports)"
        )
    else:
        why = f"TUNSETIFF {name}: {err.strerror}"
    return TunError(code, why)


def open_tun(
    name: str = "tun%d",
    *,
    tap: bool = False,
    vnet_hdr: bool = False,
    offload: bool = False,
    multi_queue: bool = False,
    path: str = DEFAULT_PATH,
) -> Tun:
    """Create (or attach to) a TUN/TAP interface and return its non-blocking fd.

    `name` may hold one `%d` for the kernel to fill in; the real name is read back. With
    `offload`, the kernel hands over GSO super-packets (up to ~64 KB) after a virtio_net_hdr and
    leaves checksums to whoever writes them out: far fewer reads per byte.
    """
    if offload and not vnet_hdr:
        raise ValueError(
            "offload=True needs vnet_hdr=True: without the virtio_net_hdr the reader cannot see "
            "which checksums are left to fill in, and TCP through the tunnel breaks"
        )
    if tap and name == "tun%d":
        name = "tap%d"
    problem = _name_problem(name)
    if problem:
        raise TunError(errno.EINVAL, problem)
    flags = (IFF_TAP if tap else IFF_TUN) | IFF_NO_PI
    if vnet_hdr:
        flags |= IFF_VNET_HDR
    if multi_queue:
        flags |= IFF_MULTI_QUEUE
    try:
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        raise _open_error(path, err) from err
    try:
        ifr = bytearray(_IFREQ.pack(name.encode(), flags))
        try:
            fcntl.ioctl(fd, TUNSETIFF, ifr, True)
        except OSError as err:
            raise _setiff_error(name, flags, err) from err
        real_name = _IFREQ.unpack(ifr)[0].rstrip(b"\0").decode()
        accepted = 0
        if vnet_hdr:
            _ioctl_int(fd, TUNSETVNETHDRSZ, VNET_HDR_LEN, real_name, "TUNSETVNETHDRSZ")
        if offload:
            accepted = _set_offload(fd, real_name)
        return Tun(fd, real_name, tap, vnet_hdr, accepted, multi_queue)
    except BaseException:
        os.close(fd)
        raise


def _ioctl_int(fd: int, request: int, value: int, name: str, what: str) -> None:
    try:
        fcntl.ioctl(fd, request, struct.pack("i", value))
    except OSError as err:
        raise TunError(err.errno or errno.EIO, f"{what} {name}: {err.strerror}") from err


def _set_offload(fd: int, name: str) -> int:
    """Ask for TCP and UDP segmentation offload; fall back to TCP only on older kernels."""
    last: OSError | None = None
    for flags in (OFFLOAD_FULL, OFFLOAD_TCP):
        try:
            fcntl.ioctl(fd, TUNSETOFFLOAD, flags)
        except OSError as err:
            last = err
            if err.errno != errno.EINVAL:
                break
            continue
        return flags
    assert last is not None
    raise TunError(
        last.errno or errno.EIO,
        f"TUNSETOFFLOAD {name}: {last.strerror} — this kernel refuses checksum/segmentation "
        "offload on tun; open it without offload",
    ) from last


def tun_features(path: str = DEFAULT_PATH) -> int:
    """The IFF_* flags this kernel's tun driver supports (TUNGETFEATURES)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as err:
        raise _open_error(path, err) from err
    try:
        buf = bytearray(4)
        fcntl.ioctl(fd, TUNGETFEATURES, buf, True)
        return int(struct.unpack("I", buf)[0])
    except OSError as err:
        raise TunError(err.errno or errno.EIO, f"TUNGETFEATURES: {err.strerror}") from err
    finally:
        os.close(fd)


def supports_offload(path: str = DEFAULT_PATH) -> bool:
    """Whether a tun here can carry virtio_net_hdr (the prerequisite of TUNSETOFFLOAD)."""
    try:
        return bool(tun_features(path) & IFF_VNET_HDR)
    except OSError:
        return False


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
        problem = _vnet_hdr_problem(parse_vnet_hdr(data), size - VNET_HDR_LEN)
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


def _vnet_hdr_problem(hdr: VnetHdr, payload: int) -> str | None:
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
