"""The end-to-end tests run each check on both lab backends: namespaces and Docker."""

from __future__ import annotations

import os
import subprocess

import pytest

from lab.backends.docker import engine as docker_lab
from lab.backends.docker.ping import docker_answers
from lab.backends.registry import ENTRIES
from lab.model import LabError

# netns first: it is quicker. A backend that needs a cluster (swarm) has its own tests.
BACKENDS = sorted((n for n, e in ENTRIES.items() if e.every_e2e), key=lambda n: n != "netns")
IMAGE = os.environ.get("VPNLAB_IMAGE", "vpnlab/node:latest")


def backend_skip_reason(name: str) -> str | None:
    """Why this machine cannot run that backend (None: it can). Only missing things skip."""
    if os.geteuid() != 0:
        return "needs root for network namespaces and TUN devices (run as root: sudo make test)"
    if name == "docker":
        if not docker_answers():
            return (
                "no Docker engine answers (start dockerd, or `make deps` installs and starts one)"
            )
        found = subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True)
        if found.returncode != 0:
            pytest.fail(f"image {IMAGE} missing: run `make images` (make test does it first)")
    return None


@pytest.fixture(params=BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    reason = backend_skip_reason(request.param)
    if reason:
        pytest.skip(reason)
    return request.param


@pytest.fixture(scope="module")
def engine():
    """A client of the host's Docker engine (the Docker backend's tests skip without one)."""
    try:
        return docker_lab.engine()
    except LabError as exc:
        pytest.skip(f"no Docker engine answers: {exc}")
