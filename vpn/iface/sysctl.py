"""Sysctls under /proc/sys by their dotted or slashed names; errors say what to do instead."""

from __future__ import annotations

import errno
from pathlib import Path

from vpn.errors import NetConfError

SYSCTL_ROOT = Path("/proc/sys")


def sysctl_path(key: str) -> Path:
    """`net.ipv4.ip_forward` or `net/ipv6/conf/eth0.5/disable_ipv6` (slashes keep dotted names)."""
    if key.startswith(str(SYSCTL_ROOT) + "/"):
        return Path(key)
    return SYSCTL_ROOT / (key if "/" in key else key.replace(".", "/"))


def read_sysctl(key: str) -> str:
    """The current value of sysctl `key` (dots or slashes), as text."""
    path = sysctl_path(key)
    try:
        return path.read_text().strip()
    except FileNotFoundError as err:
        raise NetConfError(
            f"sysctl {key} does not exist here ({path}): the module is not loaded, the "
            "interface is missing, or the name is misspelt",
            errno.ENOENT,
        ) from err


def write_sysctl(key: str, new: str) -> None:
    """Write `new` to sysctl `key`; a refusal says how to set it in a container instead."""
    path = sysctl_path(key)
    try:
        path.write_text(new + "\n")
    except OSError as err:
        dotted = str(path.relative_to(SYSCTL_ROOT)).replace("/", ".")
        hint = ""
        if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            parts = dotted.split(".")
            if len(parts) == 5 and parts[:3] == ["net", "ipv6", "conf"] and parts[3] != "all":
                # A device made after the container started takes its settings from default.
                dotted = ".".join([*parts[:3], "default", parts[4]])
            hint = (
                f" — /proc/sys is read-only or needs root here; for a container set it at "
                f"start: docker run --sysctl {dotted}={new} (compose: sysctls:)"
            )
        raise NetConfError(f"write sysctl {key}={new}: {err.strerror}{hint}", err.errno) from err
