"""The swarm backend end to end on a real two-engine swarm (the host's engine as manager, a
second dockerd in a namespace as worker), brought up for the session and always taken down —
unless `make swarm-up` had made it before, then it is left as it was.

Every e2e test does not run on swarm (tests/e2e/conftest.py): a few key scenarios run here, the
full list with `make scenarios BACKENDS=swarm`.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.backends.swarm import cluster
from lab.backends.swarm.backend import SwarmBackend
from lab.model import LabError
from lab.run import running_lab
from scenarios import load
from scenarios.runner import FAILED, SKIPPED, execute
from scenarios.tunnel import NO_IPV6
from tests.e2e.conftest import backend_skip_reason

KEY_SCENARIOS = ("basic", "mtu", "link-cut", "capture", "multi-client")


def _dockerds() -> int:
    return len(subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True).stdout.split())


@pytest.fixture(scope="session")
def swarm() -> Iterator[dict[str, str]]:
    reason = backend_skip_reason("docker")
    if reason:
        pytest.skip(reason)
    made_before = cluster.engines() is not None
    if not made_before and cluster.swarm_state(cluster.LOCAL_ENGINE) != "inactive":
        pytest.skip("the host's engine is in a swarm `make swarm-up` did not make: left alone")
    dockerds = _dockerds()
    try:
        yield cluster.up(lambda line: print(line, flush=True))
    finally:
        if not made_before:
            cluster.down(lambda line: print(line, flush=True))
            assert cluster.swarm_state(cluster.LOCAL_ENGINE) == "inactive"
            assert not Path("/var/run/netns", cluster.NETNS).exists()
            assert not Path("/sys/class/net", cluster.HOST_VETH).exists()
            assert not cluster.EXEC_ROOT.exists() and not cluster.DATA_ROOT.exists()
            assert _dockerds() <= max(dockerds - 1, 1)
            assert not cluster.record_path().exists()


def test_nodes_spread_over_two_engines_and_talk_over_the_overlay(swarm: dict[str, str]) -> None:
    assert len(swarm) == 2
    with running_lab("swarm") as lab:
        engine_of = lab.engine_of  # type: ignore[attr-defined]
        assert engine_of("client") != engine_of("gateway")
        assert engine_of("gateway") == engine_of("host1")  # the LAN stays with its gateway
        gateway = str(lab.topology.node("gateway").address("internet"))
        assert lab.exec("client", ["ping", "-c", "1", "-W", "2", gateway]).returncode == 0
        ifname = lab.interface("client", "internet")
        assert lab.ensure("client", ["cat", f"/sys/class/net/{ifname}/mtu"]).strip() == "1450"
        assert lab.host("client").interface(ifname).exists  # testinfra through the worker
        lab.link_down("client", "internet")
        try:
            assert lab.exec("client", ["ping", "-c", "1", "-W", "1", gateway]).returncode != 0
        finally:
            lab.link_up("client", "internet")
        assert lab.exec("client", ["ping", "-c", "1", "-W", "2", gateway]).returncode == 0


def test_place_moves_a_node_and_an_unknown_engine_is_refused(
    swarm: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VPNLAB_PLACE", "client=manager")
    with running_lab("swarm") as lab:
        assert lab.engine_of("client") == "manager"  # type: ignore[attr-defined]
    monkeypatch.setenv("VPNLAB_PLACE", "client=laptop9")
    with pytest.raises(LabError, match="engines: manager, worker1"), running_lab("swarm"):
        pass


@pytest.mark.parametrize("name", KEY_SCENARIOS)
def test_key_scenario_on_swarm(swarm: dict[str, str], name: str) -> None:
    lines: list[str] = []
    result = execute(load(name), "swarm", out=lines.append)
    report = "\n".join(lines)
    assert result.steps and not result.skipped, report
    # The VPN runs IPv4 only on a swarm (SwarmBackend.static_ipv6): the IPv6 steps skip, with
    # that reason and no other; every other step passes.
    assert not SwarmBackend.static_ipv6
    for step in result.steps:
        ipv6_skip = step.status == SKIPPED and step.detail == f"skipped: {NO_IPV6}"
        assert step.passed or ipv6_skip, f"{step.name}: {step.detail}\n{report}"
    assert any(s.passed for s in result.steps) and result.status != FAILED, report
    if name == "mtu":
        assert result.metrics["tun_mtu"] == 1350, report  # 1400 less VXLAN's 50 bytes


def test_no_leftover_lab_on_any_engine(swarm: dict[str, str]) -> None:
    for url in swarm.values():
        ids = subprocess.run(
            ["docker", "-H", url, "ps", "-aq", "--filter", "label=vpnlab.swarm"],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        assert ids == [], f"containers left on {url}"
    assert os.geteuid() == 0
