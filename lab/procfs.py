"""What /proc says of a process: whether it lives, when it started, its CPU time (from
/proc/PID/stat), and which network namespace it is in (/proc/PID/ns/net).

Start times make a PID safe to act on later (a reused PID has another start time).
"""

from __future__ import annotations

import os
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def stat_fields(pid: int) -> list[str] | None:
    """The fields after the command name (field 3 of proc(5) is index 0); None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def start_time(pid: int) -> int | None:
    fields = stat_fields(pid)
    return int(fields[19]) if fields else None


def alive(pid: int) -> bool:
    """Running, and not a zombie waiting to be reaped."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of all the process's threads; None if it is gone."""
    fields = stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / TICK if fields else None


def net_ns(path: Path | str) -> tuple[int, int] | None:
    """The identity (device, inode) of a network namespace file: /run/netns/NAME or
    /proc/PID/ns/net; None if there is no such file."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def net_ns_of(pid: int) -> tuple[int, int] | None:
    """The network namespace of process pid (its main thread's), None if it is gone."""
    return net_ns(f"/proc/{pid}/ns/net")


def pids_in(namespaces: set[tuple[int, int]]) -> list[int]:
    """Live processes whose network namespace is one of namespaces (as `ip netns pids`)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and net_ns_of(int(entry.name)) in namespaces:
            found.append(int(entry.name))
    return found
