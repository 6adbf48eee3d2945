"""What the netns backend asks of the kernel beyond netlink: names, sysctls written from a
thread inside a namespace, and `ip netns del` — without pyroute2, whose import costs 0.3 s.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import os
import re
import threading
from pathlib import Path

from lab.model import LabError

NETNS_DIR = Path("/run/netns")
ETC_NETNS_DIR = Path("/etc/netns")
CLONE_NEWNET = 0x40000000
MNT_DETACH = 2
IFNAMSIZ = 15

# Set in every namespace before the compose file's own sysctls. A new namespace copies IPv4
# settings from the host's (net.core.devconf_inherit_init_net=0), where Docker turned forwarding
# on: only nodes whose compose entry says so forward. No IPv6, as Docker gives containers on
# IPv4-only networks: it keeps captures quiet (the lab namespace keeps it so: its bridges
# carry IPv6 frames without an address of their own).
BASE_SYSCTLS = {
    "net.ipv4.ip_forward": "0",
    "net.ipv6.conf.all.disable_ipv6": "1",
    "net.ipv6.conf.default.disable_ipv6": "1",
}
# Then in the namespace of each node on a dual-stack network, as Docker enables IPv6 in a
# container that joins one: interfaces made afterwards have IPv6; forwarding stays off unless
# the compose file turns it on (net.ipv6.conf.all.forwarding).
IPV6_SYSCTLS = {
    "net.ipv6.conf.all.disable_ipv6": "0",
    "net.ipv6.conf.default.disable_ipv6": "0",
    "net.ipv6.conf.all.forwarding": "0",
}
# ifaddrmsg flag: the address is usable at once, without duplicate address detection's second.
IFA_F_NODAD = 0x02


def prefix_for(run_id: str) -> str:
    """`vl` + the run id when short and plain, else `vl` + 6 hex of its hash (names ≤ 15)."""
    if re.fullmatch(r"[0-9a-z]{1,6}", run_id):
        return f"vl{run_id}"
    return "vl" + hashlib.sha256(run_id.encode()).hexdigest()[:6]


_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def write_sysctls(ns: str, values: dict[str, str]) -> None:
    """Write net.* sysctls inside ns, from a short-lived thread that joins ns (/proc/sys/net
    shows the calling thread's namespace) — no process to start."""
    errors: list[BaseException] = []

    def work() -> None:
        try:
            fd = os.open(NETNS_DIR / ns, os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into {ns} failed")
            finally:
                os.close(fd)
            for key, value in values.items():
                path = Path("/proc/sys") / key.replace(".", "/")
                try:
                    path.write_text(f"{value}\n")
                except OSError as exc:
                    raise LabError(f"{ns}: cannot set sysctl {key}={value}: {exc}") from None
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=work, name=f"sysctl-{ns}")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def remove_netns(ns: str) -> None:
    """`ip netns del`: detach and unlink the name; the kernel frees the namespace (and its
    veths) once no process or socket holds it. Without pyroute2, whose import costs 0.3 s."""
    path = NETNS_DIR / ns
    if not path.exists():
        return
    _libc.umount2(str(path).encode(), MNT_DETACH)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
