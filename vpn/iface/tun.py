"""TUN/TAP devices: open one through /dev/net/tun (with offloads if asked), and say in words
why the kernel refused to. What a packet must look like to be written is `vpn.iface.tun_writes`.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
from dataclasses import dataclass

from vpn.errors import TunError
from vpn.iface.vnet import VNET_HDR_LEN

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

_IFREQ = struct.Struct("16sH22x")  # struct ifreq: name, then ifr_flags in a 24-byte union

_CAP_HINT = "needs root or CAP_NET_ADMIN (docker: --cap-add NET_ADMIN)"


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


def _error(code: int, why: str) -> TunError:
    """A TunError whose advice is what follows the first " — " of `why`."""
    what, _, advice = why.partition(" — ")
    return TunError(code, what, advice=advice)


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
    return _error(code, why)


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
    return _error(code, why)


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
