"""Labs that outlive their run: a killed run's orphan is removed, a kept lab is refused.

Apart from tests/e2e/test_docker_backend.py, whose lab stays up for that whole module: these
need the engine free of labs, and make their own.
"""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path

import docker.errors
import pytest
from docker.types import IPAMConfig, IPAMPool

from lab.backends.docker.backend import DockerBackend
from lab.backends.docker.engine import remove_network
from tests.e2e.conftest import IMAGE
from tests.e2e.dockerlab import (
    assert_refused_for,
    lab_in_another_process,
    leftovers,
    run_id,
    topology,
)

pytestmark = pytest.mark.docker


def test_a_lab_left_by_a_killed_run_is_removed_by_the_next(engine, tmp_path: Path, capfd) -> None:
    """A run SIGKILLed with its lab up (a lost CI job) must not block every later run.

    Runs after the module's lab is down: the subnets are free for the killed run's lab.
    """
    orphan_id = run_id()
    orphan = f"vpnlab-{orphan_id}"
    killed = None
    try:
        killed = lab_in_another_process(tmp_path / "orphan", orphan_id, kept=False)
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
        assert leftovers(engine, orphan), "SIGKILL leaves the lab up: the case to handle"
        capfd.readouterr()
        backend = DockerBackend(topology(tmp_path), run_id(), tmp_path)
        try:
            backend.up()
            said = capfd.readouterr().err
            assert f"removing lab {orphan}" in said and f"pid {killed.pid}" in said, said
            assert leftovers(engine, orphan) == []
            assert backend.exec("client", ["true"]).returncode == 0
        finally:
            backend.down()
    finally:
        if killed is not None and killed.poll() is None:
            killed.kill()
            killed.wait()
        DockerBackend(topology(tmp_path), orphan_id, tmp_path).down()


def test_a_kept_lab_is_refused_never_removed(engine, tmp_path: Path) -> None:
    """A lab meant to outlive its process (`vpnlab up`) is someone's: refused, not reaped."""
    kept_id = run_id()
    maker = None
    try:
        maker = lab_in_another_process(tmp_path / "kept", kept_id, kept=True)
        maker.communicate(timeout=30)  # it exits, its lab stays up
        assert maker.returncode == 0
        assert_refused_for(kept_id, tmp_path)
        assert leftovers(engine, f"vpnlab-{kept_id}"), "the kept lab is untouched"
    finally:
        if maker is not None and maker.poll() is None:
            maker.kill()
            maker.wait()
        DockerBackend(topology(tmp_path), kept_id, tmp_path).down()


def test_a_network_still_holding_an_endpoint_is_removed(engine) -> None:
    """down() must not leave a network behind because an endpoint outlived its container:
    such a network blocks every later lab on its subnet (seen once in 100 soak cycles)."""
    project = f"vpnlab-{run_id()}"
    labels = {"com.docker.compose.project": project}
    network = engine.networks.create(
        f"{project}_lan",
        internal=True,
        labels=labels,
        ipam=IPAMConfig(pool_configs=[IPAMPool(subnet="10.251.7.0/24")]),
    )
    box = None
    try:
        box = engine.containers.run(
            IMAGE, ["sleep", "infinity"], detach=True, network=network.name, init=True
        )
        # The endpoint is live: a plain network.remove() is refused ("active endpoints").
        assert remove_network(engine, network, seconds=5) is None
        assert [n.name for n in engine.networks.list(names=[network.name])] == []
    finally:
        if box is not None:
            box.remove(force=True)
        with contextlib.suppress(docker.errors.NotFound):
            network.remove()
