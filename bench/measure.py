"""What the benchmark measures on lab nodes: iperf3 throughput, ping RTT, CPU time of processes.

Every number comes from a real tool run on a real path: iperf3's own JSON report, ping's
per-reply times, the kernel's per-process CPU accounting in /proc/PID/stat.
"""

from __future__ import annotations

import json
import re
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab import procfs
from lab.backends.base import Backend
from lab.model import LabError

IPERF_PORT = 5201
PING_COUNT = 20
PING_INTERVAL = 0.05  # below 0.2 s ping needs root, which the namespace backend has anyway
_PING_TIME = re.compile(r"time[=<]([\d.]+) ms")
ATTEMPTS = 3  # iperf3 runs that fail on their own (a reset control connection) are redone


class BenchError(LabError):
    """A measurement could not be made; the message says which, why and what to do."""


class IperfError(BenchError):
    """iperf3 ran but reported a failure of its own."""


@dataclass
class Transfer:
    """One iperf3 run: what arrived, how fast, and what it cost the VPN processes."""

    mbps: float
    bytes: int
    seconds: float
    retransmits: int | None
    cpu_seconds: float | None
    loaded_rtts_ms: list[float] = field(default_factory=list)

    @property
    def cpu_s_per_gb(self) -> float | None:
        if self.cpu_seconds is None or not self.bytes:
            return None
        return self.cpu_seconds / (self.bytes / 1e9)


def parse_iperf3(text: str) -> tuple[float, int, float, int | None]:
    """(Mbit/s received, bytes received, seconds, retransmits) from `iperf3 -J` output."""
    try:
        data = json.loads(text)
    except ValueError:
        raise BenchError(
            f"iperf3 did not print JSON: {text.strip()[:300] or '(nothing)'}"
        ) from None
    if "error" in data:
        raise IperfError(f"iperf3: {data['error']}")
    try:
        received = data["end"]["sum_received"]
        sent = data["end"]["sum_sent"]
    except KeyError:
        raise BenchError("iperf3 report has no end.sum_received: the test did not run") from None
    return (
        received["bits_per_second"] / 1e6,
        int(received["bytes"]),
        float(received["seconds"]),
        sent.get("retransmits"),
    )


def parse_ping(text: str) -> list[float]:
    """Every reply's round-trip time in ms, in order."""
    return [float(m) for m in _PING_TIME.findall(text)]


def ping(
    backend: Backend,
    node: str,
    address: str,
    count: int = PING_COUNT,
    interval: float = PING_INTERVAL,
) -> list[float]:
    """RTTs of `count` echo requests (ping -6 to an IPv6 address); fails when fewer than half
    are answered."""
    family = ["-6"] if ":" in address else []
    argv = ["ping", *family, "-n", "-c", str(count), "-i", f"{interval:g}", "-W", "1", address]
    result = backend.exec(node, argv, timeout=count * interval + 15)
    rtts = parse_ping(result.stdout)
    if len(rtts) < count / 2:
        raise BenchError(
            f"{node} → {address}: only {len(rtts)} of {count} pings answered: "
            f"{(result.stdout or result.stderr).strip()[-300:]}"
        )
    return rtts


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


# -- CPU accounting ------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    seconds = procfs.cpu_seconds(pid)
    if seconds is None:
        raise BenchError(f"process {pid} is gone: did the VPN exit during the run?")
    return seconds


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def find_pids(backend: Backend, node: str, *words: str) -> list[int]:
    """PIDs on node whose command line holds every word in order (e.g. "-m", "vpn", "server")."""
    pids = backend.host_pids(node)
    if pids is None:
        raise BenchError(
            f"the {backend.name} backend does not expose host PIDs: CPU per GB needs the "
            "namespace backend (--backend netns)"
        )
    found = []
    for pid in pids:
        argv = cmdline(pid)
        text = "\0".join(argv)
        if "\0".join(words) in text:
            found.append(pid)
    return found


# -- one iperf3 run ------------------------------------------------------------------------------
def transfer(
    backend: Backend,
    node: str,
    server: str,
    seconds: float,
    *,
    reverse: bool,
    pids: list[int],
    ping_target: str | None = None,
) -> Transfer:
    """iperf3 TCP from node to server (or back with reverse), with pings during the run; over
    IPv6 (-6) when server is an IPv6 address.

    CPU of `pids` is sampled right before and right after; the pings start once TCP has left
    slow start, so they see the queues a saturated path builds (latency under load). A run
    that iperf3 itself reports as failed (server busy closing the last test, control
    connection reset) is redone, up to ATTEMPTS times.
    """
    argv = ["iperf3", "-c", server, "-p", str(IPERF_PORT), "-J", "-t", f"{seconds:g}"]
    if ":" in server:
        argv.append("-6")  # an IPv6 address: the test over IPv6
    argv += ["--connect-timeout", "3000"]
    if reverse:
        argv.append("-R")
    for attempt in range(ATTEMPTS):
        try:
            return _iperf3_with_pings(backend, node, argv, seconds, pids, ping_target)
        except IperfError:
            if attempt == ATTEMPTS - 1:
                raise
            time.sleep(1.0)
    raise AssertionError("unreachable")


def _iperf3_with_pings(
    backend: Backend,
    node: str,
    argv: list[str],
    seconds: float,
    pids: list[int],
    ping_target: str | None,
) -> Transfer:
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = backend.exec(node, argv, timeout=seconds + 30)
        except BaseException as exc:
            outcome["error"] = exc

    before = sum(cpu_seconds(p) for p in pids)
    thread = threading.Thread(target=run, name="iperf3")
    thread.start()
    loaded: list[float] = []
    try:
        if ping_target is not None:
            time.sleep(min(1.0, seconds * 0.3))
            count = max(5, min(PING_COUNT, int(seconds * 0.6 / PING_INTERVAL)))
            loaded = ping(backend, node, ping_target, count=count)
    finally:
        thread.join()
    after = sum(cpu_seconds(p) for p in pids)
    if "error" in outcome:
        raise outcome["error"]
    result = outcome["result"]
    mbps, nbytes, secs, retransmits = parse_iperf3(result.stdout)
    return Transfer(
        mbps=mbps,
        bytes=nbytes,
        seconds=secs,
        retransmits=retransmits,
        cpu_seconds=(after - before) if pids else None,
        loaded_rtts_ms=loaded,
    )
