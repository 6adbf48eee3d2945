"""scripts/deps.sh: the host tools a lab runs, installed once and only when missing.

The tools' presence is made real with a PATH of our own (links to the host's binaries, one left
out); apt-get is a recording stand-in, so the test installs nothing on the machine.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

DEPS = Path(__file__).resolve().parents[2] / "scripts" / "deps.sh"
TOOLS = {"ip": "iproute2", "ping": "iputils-ping", "iperf3": "iperf3", "tcpdump": "tcpdump",
         "ps": "procps", "iptables": "iptables", "dnsmasq": "dnsmasq-base"}  # fmt: skip


def fake_path(tmp_path: Path, without: set[str], uid: int = 0) -> tuple[Path, Path]:
    bin_dir, calls = tmp_path / "bin", tmp_path / "apt-calls"
    bin_dir.mkdir()
    for name in TOOLS.keys() - without:
        (bin_dir / name).symlink_to("/bin/true")
    (bin_dir / "id").write_text(f"#!/bin/sh\necho {uid}\n")
    (bin_dir / "apt-get").write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    for stub in ("id", "apt-get"):
        (bin_dir / stub).chmod(0o755)
    return bin_dir, calls


def deps(bin_dir: Path) -> subprocess.CompletedProcess[str]:
    bash = shutil.which("bash") or "/bin/bash"
    return subprocess.run(
        [bash, str(DEPS)], env={"PATH": str(bin_dir)}, capture_output=True, text=True, timeout=30
    )


def test_only_the_missing_tool_is_installed(tmp_path: Path) -> None:
    bin_dir, calls = fake_path(tmp_path, without={"tcpdump", "iperf3"})
    done = deps(bin_dir)
    assert done.returncode == 0, done.stderr
    assert "installing iperf3 tcpdump" in done.stdout
    installs = [line for line in calls.read_text().splitlines() if " install " in f" {line} "]
    assert len(installs) == 1 and installs[0].split()[-2:] == ["iperf3", "tcpdump"]


def test_nothing_missing_prints_nothing_and_installs_nothing(tmp_path: Path) -> None:
    bin_dir, calls = fake_path(tmp_path, without=set())
    done = deps(bin_dir)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert not calls.exists()


def test_not_root_is_told_what_to_do(tmp_path: Path) -> None:
    bin_dir, calls = fake_path(tmp_path, without={"tcpdump"}, uid=1000)
    done = deps(bin_dir)
    assert done.returncode == 1
    assert "missing tcpdump: run as root" in done.stderr
    assert not calls.exists()
