"""`python -m bench` on its shortest setting: it runs end to end in the namespace lab and writes
results of the documented shape. Numbers are checked for sense only (positive): a benchmark
is not a test of speed."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from bench.__main__ import main
from bench.run import METRICS

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(
        os.geteuid() != 0,
        reason="the benchmark needs root for network namespaces and TUN devices "
        "(run as root: sudo make test)",
    ),
    pytest.mark.skipif(
        shutil.which("iperf3") is None, reason="iperf3 is not installed (apt-get install iperf3)"
    ),
]


def test_bench_runs_every_path_and_reports_positive_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = ["plain", "vpn", "vpn-v6"]  # in bench.paths.PATHS' order, as bench.json has them
    if shutil.which("openvpn"):
        paths += ["openvpn-tcp", "openvpn-udp"]
    output, chart = tmp_path / "bench.json", tmp_path / "bench.png"
    argv = ["--repeat", "1", "--seconds", "1", "--paths", ",".join(paths)]
    status = main([*argv, "--output", str(output), "--chart", str(chart)])
    printed, errors = capsys.readouterr()
    assert status == 0, printed + errors

    data = json.loads(output.read_text())
    assert {"paths", "ratios", "repetitions", "machine"} <= set(data)
    assert list(data["paths"]) == paths
    for name, row in data["paths"].items():
        assert set(row) == set(METRICS), name
        for metric in ("fwd_mbps", "rev_mbps", "rtt_ms", "rtt_loaded_ms"):
            assert row[metric] > 0, (name, metric, row)
        if name == "plain":
            assert row["cpu_s_per_gb"] is None  # no VPN process to charge
        else:
            assert row["cpu_s_per_gb"] > 0, (name, row)
    ratios = data["ratios"]
    for direction in ("fwd", "rev"):
        assert ratios[f"vpn_over_plain_{direction}"] > 0
        assert ratios[f"vpn_v6_over_vpn_{direction}"] > 0
        assert ratios[f"vpn_v6_over_plain_{direction}"] > 0
        if "openvpn-tcp" in paths:
            assert ratios[f"vpn_over_openvpn_tcp_{direction}"] > 0
            assert ratios[f"vpn_over_openvpn_udp_{direction}"] > 0
    assert len(data["repetitions"]) == 1
    assert data["machine"]["cores"] >= 1 and data["machine"]["kernel"]
    assert data["machine"].get("vpn_offload") in (True, False)
    assert "| vpnlab |" in printed  # the table on the terminal
    assert "| vpnlab IPv6 (inside and outside) |" in printed
    details = data["repetitions"][0]["paths"]["vpn-v6"]["details"]
    assert details["address6"] and details["server"].startswith("["), details  # IPv6 both ways
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
