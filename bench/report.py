"""The benchmark's results for people: a table, the targets met or missed, and a chart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

LABELS = {
    "plain": "plain routing (no VPN)",
    "vpn": "vpnlab",
    "vpn-v6": "vpnlab IPv6 (inside and outside)",
    "openvpn-tcp": "OpenVPN 2.6 TCP",
    "openvpn-udp": "OpenVPN 2.6 UDP",
}


def _cell(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def table(results: dict[str, Any]) -> str:
    """The medians as a Markdown table (readable on a terminal, pasted as is into the docs)."""
    lines = [
        "| path | fwd Mbit/s | rev Mbit/s | idle RTT ms | RTT under load ms | VPN CPU-s per GB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in results["paths"].items():
        lines.append(
            f"| {LABELS.get(name, name)} | {_cell(row['fwd_mbps'], 0)} | "
            f"{_cell(row['rev_mbps'], 0)} | {_cell(row['rtt_ms'], 3)} | "
            f"{_cell(row['rtt_loaded_ms'], 2)} | {_cell(row['cpu_s_per_gb'], 2)} |"
        )
    return "\n".join(lines)


def ratio_lines(results: dict[str, Any]) -> str:
    """Throughput ratios: vpnlab ÷ each other path, then (if measured) vpnlab IPv6 ÷ each."""
    ratios = results["ratios"]
    if not ratios:
        return ""
    blocks = []
    for mine, others in (
        ("vpn", ("openvpn_tcp", "openvpn_udp", "plain")),
        ("vpn_v6", ("vpn", "openvpn_tcp", "openvpn_udp", "plain")),
    ):
        lines = [f"| {LABELS[mine.replace('_', '-')]} ÷ | fwd | rev |", "|---|---:|---:|"]
        for other in others:
            fwd = ratios.get(f"{mine}_over_{other}_fwd")
            rev = ratios.get(f"{mine}_over_{other}_rev")
            if fwd is None and rev is None:
                continue
            name = LABELS.get(other.replace("_", "-"), other)
            lines.append(f"| {name} | {_cell(fwd, 2)}× | {_cell(rev, 2)}× |")
        if len(lines) > 2:
            blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def targets(results: dict[str, Any]) -> list[tuple[str, bool | None, str]]:
    """The data path's goals: (goal, met — None when not measured, the measured value)."""
    paths, ratios = results["paths"], results["ratios"]
    vpn = paths.get("vpn")
    tcp = paths.get("openvpn-tcp")
    out: list[tuple[str, bool | None, str]] = []

    def ratio_goal(key: str, goal: float, text: str) -> None:
        values = [ratios.get(f"{key}_{d}") for d in ("fwd", "rev")]
        if None in values:
            out.append((text, None, "not measured"))
            return
        shown = " / ".join(f"{v:.2f}×" for v in values if v is not None)
        out.append((text, all(v is not None and v >= goal for v in values), shown))

    ratio_goal("vpn_over_openvpn_tcp", 10, "throughput ≥ 10× OpenVPN TCP (fwd / rev)")
    ratio_goal("vpn_over_openvpn_udp", 6, "throughput ≥ 6× OpenVPN UDP (fwd / rev)")
    cpu = vpn["cpu_s_per_gb"] if vpn else None
    out.append(("≤ 2 CPU-s per GB", None if cpu is None else cpu <= 2, f"{_cell(cpu, 2)} CPU-s/GB"))
    for metric, text in (("rtt_ms", "idle RTT"), ("rtt_loaded_ms", "RTT under load")):
        mine, theirs = (vpn or {}).get(metric), (tcp or {}).get(metric)
        if mine is None or theirs is None:
            out.append((f"{text} ≤ OpenVPN TCP's", None, "not measured"))
        else:
            out.append(
                (f"{text} ≤ OpenVPN TCP's", mine <= theirs, f"{mine:.3f} vs {theirs:.3f} ms")
            )
    return out


def target_lines(results: dict[str, Any]) -> str:
    marks = {True: "met", False: "NOT met", None: "not measured"}
    return "\n".join(f"- {goal}: {marks[met]} ({value})" for goal, met, value in targets(results))


def write_json(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)


def chart(results: dict[str, Any], path: Path) -> None:
    """Three panels: throughput both ways, RTT idle and under load, CPU per GB (matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = results["paths"]
    names = list(paths)
    labels = [
        LABELS.get(n, n).replace(" (no VPN)", "\n(no VPN)").replace(" (inside", "\n(inside")
        for n in names
    ]
    x = range(len(names))
    width = 0.38

    def values(metric: str, scale: float = 1.0) -> list[float]:
        return [(paths[n][metric] or 0.0) * scale for n in names]

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    ax = axes[0]
    ax.bar([i - width / 2 for i in x], values("fwd_mbps", 1e-3), width, label="client → LAN")
    ax.bar([i + width / 2 for i in x], values("rev_mbps", 1e-3), width, label="LAN → client")
    ax.set_yscale("log")
    ax.set_ylabel("Gbit/s (iperf3 TCP, log scale)")
    ax.set_title("Throughput")
    ax.legend()
    ax = axes[1]
    ax.bar([i - width / 2 for i in x], values("rtt_ms"), width, label="idle")
    ax.bar([i + width / 2 for i in x], values("rtt_loaded_ms"), width, label="under load")
    ax.set_ylabel("ping RTT, ms (median)")
    ax.set_title("Latency")
    ax.legend()
    ax = axes[2]
    vpns = [i for i, n in enumerate(names) if paths[n]["cpu_s_per_gb"] is not None]
    ax.bar(
        [labels[i] for i in vpns],
        [paths[names[i]]["cpu_s_per_gb"] for i in vpns],
        color="tab:purple",
    )
    ax.set_ylabel("CPU seconds per GB (both VPN ends)")
    ax.set_title("Cost")
    for ax in axes[:2]:
        ax.set_xticks(list(x), labels)
    for ax in axes:
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    settings, host = results.get("settings", {}), results.get("machine", {})
    fig.suptitle(
        f"client → gateway → LAN host in network namespaces; medians of "
        f"{settings.get('repeat', '?')} × {settings.get('seconds', '?')} s; "
        f"{host.get('cores', '?')} cores, {host.get('cpu', '')}",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
