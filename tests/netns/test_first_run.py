"""What a machine that cannot run the lab is told: one line saying what to do, no traceback, a
non-zero status, and nothing written. Each case is made real: an unprivileged user (setpriv), a
Docker socket that nothing answers on, and /dev/net/tun hidden in a private mount namespace."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.cli import ERROR_STATUS

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
VPNLAB = [sys.executable, "-m", "lab"]


def run(argv: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "VPNLAB_STATE_DIR": str(tmp_path / "state"), **env}
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=environ)


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == ERROR_STATUS, done
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory an unprivileged user can write to (pytest's tmp_path is root's, 0700)."""
    with tempfile.TemporaryDirectory(prefix="vpnlab-first-run-") as name:
        Path(name).chmod(0o777)
        yield Path(name)


@pytest.mark.parametrize("backend", ["netns", "docker"])
def test_not_root_is_told_to_use_sudo_and_nothing_is_written(
    require_root: None, open_dir: Path, backend: str
) -> None:
    line = one_line_error(run([*NOBODY, *VPNLAB, "up", "--backend", backend], open_dir))
    assert "need root" in line and "sudo" in line
    assert not (open_dir / "state").exists()


def test_no_docker_engine_is_told_how_to_start_one(require_root: None, tmp_path: Path) -> None:
    dead = f"unix://{tmp_path}/no-engine.sock"
    line = one_line_error(run([*VPNLAB, "up", "--backend", "docker"], tmp_path, DOCKER_HOST=dead))
    assert "not running" in line and "make deps" in line and "--backend netns" in line
    assert not (tmp_path / "state").exists()


def test_no_tun_device_is_told_to_load_the_module(require_root: None, tmp_path: Path) -> None:
    hidden = ["unshare", "--mount", "sh", "-c", 'mount -t tmpfs tmpfs /dev/net && exec "$@"', "-"]
    line = one_line_error(run([*hidden, *VPNLAB, "up", "--backend", "netns"], tmp_path))
    assert "/dev/net/tun does not exist" in line and "modprobe tun" in line
    assert not (tmp_path / "state").exists()
