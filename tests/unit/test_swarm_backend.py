"""The swarm backend's pure parts: placement, the registry's flags, the tunnel MTU it asks for,
its one-line errors, and the test cluster's teardown from a record alone."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest

from lab.backends.registry import ENTRIES, default_backend_name
from lab.backends.swarm import cluster
from lab.backends.swarm.engines import connect
from lab.backends.swarm.placement import parse_places, place
from lab.model import LabError
from lab.model.compose import default_files, load
from lab.model.records import REPO_ROOT
from scenarios.tunnel import tunnel_mtu


def topology(*extra: str):  # type: ignore[no-untyped-def]
    return load(default_files(REPO_ROOT, extra), {"VPNLAB_WORKDIR": "/tmp/x"})


def test_default_placement_puts_client_and_gateway_on_different_engines() -> None:
    placed = place(topology("clients"), ["manager", "worker1"])
    assert placed["gateway"] == "manager"
    assert {placed[h] for h in ("host1", "host2", "host3")} == {"manager"}  # the LAN with it
    assert placed["client"] == "worker1"
    assert [placed[c] for c in ("client", "client2", "client3")] == [
        "worker1",
        "manager",
        "worker1",
    ]


def test_one_engine_takes_everything() -> None:
    assert set(place(topology(), ["solo"]).values()) == {"solo"}


def test_place_option_beats_label_beats_default() -> None:
    lab = topology()
    lab.nodes["host1"].labels["vpnlab.place"] = "worker1"
    placed = place(lab, ["manager", "worker1"], {"client": "manager"})
    assert placed["client"] == "manager" and placed["host1"] == "worker1"


def test_placement_errors_name_what_exists() -> None:
    with pytest.raises(LabError, match="engines: manager, worker1"):
        place(topology(), ["manager", "worker1"], {"client": "laptop9"})
    with pytest.raises(LabError, match=r"names no node.*nodes: client"):
        place(topology(), ["manager"], {"nobody": "manager"})
    with pytest.raises(LabError, match="NODE=ENGINE"):
        parse_places("client:worker1")
    assert parse_places("client=w1, gateway=m") == {"client": "w1", "gateway": "m"}


def test_swarm_is_never_the_default_nor_in_every_e2e_test(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VPNLAB_BACKEND", raising=False)
    assert "swarm" in ENTRIES and not ENTRIES["swarm"].every_e2e
    assert default_backend_name() != "swarm"
    from tests.e2e.conftest import BACKENDS

    assert "swarm" not in BACKENDS and {"docker", "netns"} <= set(BACKENDS)


def test_tunnel_mtu_leaves_room_for_vxlan() -> None:
    from lab.backends.swarm.backend import SwarmBackend

    assert SwarmBackend.link_overhead == 50
    assert tunnel_mtu(SwarmBackend) == 1350  # type: ignore[arg-type]
    assert tunnel_mtu(types.SimpleNamespace(link_overhead=0)) == 1400  # type: ignore[arg-type]


def test_an_engine_outside_a_swarm_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(LabError, match=r"run `make swarm-up` or `docker swarm init`"):
        connect({"nowhere": f"unix://{tmp_path}/no.sock"})


def test_cluster_down_from_a_crash_record_removes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VPNLAB_SWARM_DIR", str(tmp_path / "state"))
    cluster.down(print)  # no record: nothing to do
    data, run = tmp_path / "data" / "w", tmp_path / "exec" / "w"
    for directory in (data / "sub", run):
        directory.mkdir(parents=True)
    record = {
        "netns": "vl-absent-ns", "veth": "vl-absent0", "data_root": str(data),
        "exec_root": str(run), "socket": f"unix://{run}/docker.sock", "pid": None,
        "started": None, "manager_joined": False, "ready": False, "engines": {},
    }  # fmt: skip
    cluster.record_path().parent.mkdir(parents=True)
    cluster.record_path().write_text(json.dumps(record))
    assert cluster.engines() is None  # not ready: no backend uses it
    cluster.down(print)
    assert not data.exists() and not run.exists() and not cluster.record_path().exists()


def test_the_cluster_record_is_on_the_host_not_in_a_checkout(monkeypatch) -> None:
    """The cluster's namespace, veth and engine are the host's: so is the record naming them,
    or a second checkout (a CI clone) could not find what a killed run in another one left."""
    monkeypatch.delenv("VPNLAB_SWARM_DIR", raising=False)
    assert cluster.record_path() == cluster.STATE_ROOT / "cluster.json"
    assert not cluster.record_path().is_relative_to(REPO_ROOT)
    assert cluster.log_path().is_relative_to(REPO_ROOT)  # the log is for the user who ran it


def test_endpoints_ask_for_the_ipv4_address_only_and_the_tunnel_stays_ipv4() -> None:
    """The engine ignores an overlay endpoint's static IPv6 address (and a second join asking
    for one times out): the swarm asks for IPv4 only and says it has no static IPv6."""
    from lab.backends.swarm.backend import SwarmBackend
    from lab.backends.swarm.lifecycle import _addresses

    gateway = topology().node("gateway")
    assert gateway.attachment("lan").address6 is not None  # the compose files are dual-stack
    assert _addresses(gateway.attachment("lan")) == {"ipv4_address": str(gateway.address("lan"))}
    assert SwarmBackend.static_ipv6 is False


@pytest.mark.parametrize(
    ("subnets", "clash"),
    [
        (["10.9.0.0/16"], True),
        (["fd00:60::/48"], True),  # another network on the lab's IPv6 subnet
        (["172.31.0.0/24", "fd00:61::/64"], False),
        (["not a subnet"], False),
        ([], False),
    ],
)
def test_another_network_clashes_on_either_family(subnets: list[str], clash: bool) -> None:
    from lab.backends.docker.lifecycle import overlaps

    net = types.SimpleNamespace(attrs={"IPAM": {"Config": [{"Subnet": s} for s in subnets]}})
    assert overlaps(net, topology()) is clash  # type: ignore[arg-type]
