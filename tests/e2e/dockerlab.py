"""What the Docker backend's tests share: the lab of compose/lab.yml, run ids, leftovers."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from lab.backends.docker.backend import DockerBackend
from lab.model import LabError, Topology
from lab.model.compose import default_files, load

REPO = Path(__file__).resolve().parents[2]
PROJECT_LABEL = "com.docker.compose.project"


def topology(workdir: Path) -> Topology:
    return load(default_files(REPO), {**os.environ, "VPNLAB_WORKDIR": str(workdir)})


def run_id() -> str:
    return f"t{os.getpid()}{secrets.token_hex(3)}"


def leftovers(engine, project: str) -> list[str]:
    label = {"label": f"{PROJECT_LABEL}={project}"}
    return [c.name for c in engine.containers.list(all=True, filters=label)] + [
        n.name for n in engine.networks.list(filters=label)
    ]


def assert_refused_for(holder: str, workdir: Path) -> None:
    """A new lab's up() is refused, naming the lab (run id `holder`) that holds the subnets."""
    other = DockerBackend(topology(workdir), run_id(), workdir)
    try:
        with pytest.raises(LabError, match=f"another lab is up \\(run {holder}\\).*make down"):
            other.up()
    finally:
        other.down()


def lab_in_another_process(workdir: Path, lab_id: str, *, kept: bool) -> subprocess.Popen[bytes]:
    """A process that brings a lab up, prints `up` and waits for its stdin to close."""
    workdir.mkdir()
    code = (
        "import os, sys; from pathlib import Path;"
        "from lab.backends.docker.backend import DockerBackend;"
        "from lab.model.compose import default_files, load;"
        f"w = Path({str(workdir)!r});"
        f"t = load(default_files(Path({str(REPO)!r})), {{**os.environ, 'VPNLAB_WORKDIR': str(w)}});"
        f"b = DockerBackend(t, {lab_id!r}, w, wait_for_other=5); b.kept = {kept!r}; b.up();"
        "print('up', flush=True); sys.stdin.read()"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert process.stdout is not None and process.stdout.readline() == b"up\n"
    return process
