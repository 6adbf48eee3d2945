"""One benchmark run: the lab up once, every path measured in turn, R times; medians kept.

Paths are measured in the same run and interleaved (plain, vpn, vpn-v6, openvpn-tcp,
openvpn-udp, then again), so drift in the machine's load hits all of them alike; ratios are
taken within each repetition, then their median is reported.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import openvpn
from bench.measure import IPERF_PORT, BenchError, median, ping, transfer
from bench.paths import PATHS, SETUPS, Running, Site
from lab.backends.base import Backend
from lab.run import running_lab
from scenarios.tunnel import Tunnel

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = REPO_ROOT / "results"
METRICS = ("fwd_mbps", "rev_mbps", "rtt_ms", "rtt_loaded_ms", "cpu_s_per_gb")

Progress = Callable[[str], None]


@dataclass
class Settings:
    repeat: int = 3
    seconds: float = 10.0
    paths: tuple[str, ...] = PATHS
    output: Path | None = RESULTS / "bench.json"
    chart: Path | None = RESULTS / "bench.png"
    backend: str = "netns"
    extra: dict[str, Any] = field(default_factory=dict)


def measure_path(backend: Backend, site: Site, running: Running, seconds: float) -> dict[str, Any]:
    """Idle RTT, then iperf3 forward and reverse, each with pings under load and CPU sampled."""
    target = running.target or site.host_address
    idle = ping(backend, site.client, target)
    runs = {}
    for direction, reverse in (("fwd", False), ("rev", True)):
        runs[direction] = transfer(
            backend,
            site.client,
            target,
            seconds,
            reverse=reverse,
            pids=running.pids,
            ping_target=target,
        )
    fwd, rev = runs["fwd"], runs["rev"]
    loaded = fwd.loaded_rtts_ms + rev.loaded_rtts_ms
    cpu = None
    if fwd.cpu_seconds is not None and rev.cpu_seconds is not None:
        cpu = (fwd.cpu_seconds + rev.cpu_seconds) / ((fwd.bytes + rev.bytes) / 1e9)
    return {
        "fwd_mbps": round(fwd.mbps, 1),
        "rev_mbps": round(rev.mbps, 1),
        "rtt_ms": _round(median(idle)),
        "rtt_loaded_ms": _round(median(loaded)),
        "cpu_s_per_gb": _round(cpu, 2),
        "rtt_p95_ms": _round(_p95(idle)),
        "rtt_loaded_fwd_ms": _round(median(fwd.loaded_rtts_ms)),
        "rtt_loaded_rev_ms": _round(median(rev.loaded_rtts_ms)),
        "rtt_loaded_p95_ms": _round(_p95(loaded)),
        "retransmits_fwd": fwd.retransmits,
        "retransmits_rev": rev.retransmits,
        "gb_moved": round((fwd.bytes + rev.bytes) / 1e9, 3),
        **({"details": running.details} if running.details else {}),
    }


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _p95(values: list[float]) -> float | None:
    if len(values) < 2:
        return values[0] if values else None
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


# Each of this VPN's paths ÷ the paths it is compared with: vpn over IPv4 with the others,
# vpn-v6 with the same and with vpn itself (what IPv6 inside and outside costs).
COMPARED = {
    "vpn": ("openvpn-tcp", "openvpn-udp", "plain"),
    "vpn-v6": ("vpn", "openvpn-tcp", "openvpn-udp", "plain"),
}


def ratios(paths: dict[str, dict[str, Any]]) -> dict[str, float]:
    """vpn (and vpn-v6) ÷ each other path, per direction (throughput: higher is better for
    vpn); keys like vpn_over_plain_fwd, vpn_v6_over_vpn_rtt."""
    out: dict[str, float] = {}
    for name, others in COMPARED.items():
        mine = paths.get(name)
        if mine is None:
            continue
        prefix = name.replace("-", "_")
        for other in others:
            if other not in paths:
                continue
            key = other.replace("-", "_")
            for direction in ("fwd", "rev"):
                theirs = paths[other][f"{direction}_mbps"]
                if theirs:
                    value = mine[f"{direction}_mbps"] / theirs
                    out[f"{prefix}_over_{key}_{direction}"] = round(value, 3)
            if other != "plain":
                for metric in ("rtt", "rtt_loaded"):
                    theirs = paths[other][f"{metric}_ms"]
                    if theirs and mine[f"{metric}_ms"] is not None:
                        value = mine[f"{metric}_ms"] / theirs
                        out[f"{prefix}_over_{key}_{metric}"] = round(value, 3)
    return out


def summarize(repetitions: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, float]]:
    """Medians over repetitions: of each path's metrics, and of the per-repetition ratios."""
    paths: dict[str, dict[str, Any]] = {}
    names = [p for p in PATHS if any(p in r["paths"] for r in repetitions)]
    for name in names:
        rows = [r["paths"][name] for r in repetitions if name in r["paths"]]
        paths[name] = {}
        for metric in METRICS:
            values = [row[metric] for row in rows if row.get(metric) is not None]
            paths[name][metric] = _round(median(values), 3) if values else None
    keys = sorted({k for r in repetitions for k in r["ratios"]})
    ratio = {}
    for key in keys:
        values = [r["ratios"][key] for r in repetitions if key in r["ratios"]]
        ratio[key] = round(statistics.median(values), 3)
    return paths, ratio


def _tool_version(argv: list[str]) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10)
    except OSError:
        return ""
    lines = (result.stdout or result.stderr).splitlines()
    return lines[0].strip() if lines else ""


def machine() -> dict[str, Any]:
    """What the numbers were measured on: they mean little without it."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        memory = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        memory = 0
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_mb": memory,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "openssl": __import__("ssl").OPENSSL_VERSION,
        "iperf3": _tool_version(["iperf3", "--version"]),
        "openvpn": openvpn.version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _wait_iperf_server(backend: Backend, node: str, log: Callable[[], str]) -> None:
    deadline = time.monotonic() + 10
    while "Server listening" not in log():
        if time.monotonic() > deadline:
            raise BenchError(f"iperf3 -s on {node} did not start: {log().strip()[-300:]}")
        time.sleep(0.05)


def run(settings: Settings, progress: Progress = print) -> dict[str, Any]:
    """Measure every path `settings.repeat` times; the results as written to bench.json."""
    unknown = [p for p in settings.paths if p not in SETUPS]
    if unknown:
        raise BenchError(f"unknown path(s) {unknown}: choose from {', '.join(PATHS)}")
    if settings.backend != "netns":
        raise BenchError(
            "the benchmark runs on the namespace backend only (--backend netns): CPU per GB "
            "reads the VPN processes' /proc/PID/stat from the host"
        )
    if any(p.startswith("openvpn") for p in settings.paths):
        openvpn.ensure_installed(progress)
    info = machine()
    repetitions: list[dict[str, Any]] = []
    with running_lab(settings.backend, progress=progress) as backend:
        tunnel = Tunnel(backend)
        site = Site.of(backend, tunnel)
        server = backend.spawn(
            site.host, ["iperf3", "-s", "-p", str(IPERF_PORT), "--forceflush"], name="iperf3-server"
        )
        try:
            _wait_iperf_server(backend, site.host, lambda: backend.logs(server))
            for index in range(settings.repeat):
                measured: dict[str, dict[str, Any]] = {}
                for name in settings.paths:
                    progress(f"repetition {index + 1}/{settings.repeat}: {name}")
                    with SETUPS[name](backend, site, tunnel) as running:
                        if name == "vpn" or (name == "vpn-v6" and "vpn_offload" not in info):
                            info["vpn_offload"] = _offload(backend, tunnel)
                        measured[name] = measure_path(backend, site, running, settings.seconds)
                    progress(_one_line(name, measured[name]))
                repetitions.append({"paths": measured, "ratios": ratios(measured)})
        finally:
            backend.stop(server, timeout=5)
    paths, ratio = summarize(repetitions)
    return {
        "paths": paths,
        "ratios": ratio,
        "repetitions": repetitions,
        "machine": info,
        "settings": {
            "repeat": settings.repeat,
            "seconds": settings.seconds,
            "paths": list(settings.paths),
            "backend": settings.backend,
            "command": " ".join([Path(sys.executable).name, "-m", "bench", *sys.argv[1:]]),
        },
    }


def _offload(backend: Backend, tunnel: Tunnel) -> bool | None:
    process = tunnel.processes.get("vpn-server")
    text = backend.logs(process) if process else ""
    if "offload=True" in text:
        return True
    if "offload=False" in text:
        return False
    return None


def _one_line(name: str, row: dict[str, Any]) -> str:
    cpu = row["cpu_s_per_gb"]
    return (
        f"  {name}: fwd {row['fwd_mbps']:.0f} Mbit/s, rev {row['rev_mbps']:.0f} Mbit/s, "
        f"rtt {row['rtt_ms']} ms, loaded {row['rtt_loaded_ms']} ms"
        + (f", {cpu} CPU-s/GB" if cpu is not None else "")
    )
