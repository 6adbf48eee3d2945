"""The Docker backend on a real engine: the lab of compose/lab.yml, brought up once here.

Every address comes from the compose files through the topology, never from this file.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.backends.base import ExecTimeout
from lab.backends.docker import engine as docker_lab  # pinned SDK: a broken import fails
from lab.backends.docker.backend import DockerBackend
from lab.model import LabError
from tests.e2e.dockerlab import (
    PROJECT_LABEL,
    REPO,
    assert_refused_for,
    leftovers,
    run_id,
    topology,
)

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def lab(engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerBackend]:
    workdir = tmp_path_factory.mktemp("docker-lab")
    backend = DockerBackend(topology(workdir), run_id(), workdir)
    try:
        started = time.monotonic()
        backend.up()
        print(f"\nlab up in {time.monotonic() - started:.1f} s ({backend.project})")
        yield backend
    finally:
        backend.down()


def _ping(lab: DockerBackend, node: str, address: object, count: int = 1) -> int:
    argv = ["ping", "-n", "-c", str(count), "-i", "0.2", "-W", "1", str(address)]
    return lab.exec(node, argv, timeout=10 + count).returncode


def _root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root on the host (host-side veth and bridge): run as root")


# -- the lab as declared ----------------------------------------------------------------------
def test_every_node_runs_and_passes_its_healthcheck(lab: DockerBackend) -> None:
    for node in lab.topology.nodes.values():
        container = lab.container(node.name)
        container.reload()
        state = container.attrs["State"]
        assert state["Status"] == "running", node.name
        assert state["Health"]["Status"] in ("starting", "healthy"), (node.name, state["Health"])
        assert node.healthcheck, f"{node.name} declares no healthcheck"
        assert lab.exec(node.name, node.healthcheck).returncode == 0, node.name


def test_addresses_are_those_of_the_compose_files(lab: DockerBackend) -> None:
    for node in lab.topology.nodes.values():
        host = lab.host(node.name)
        seen = set()
        for attachment in node.attachments:
            ifname = lab.interface(node.name, attachment.network)
            assert str(attachment.address) in host.interface(ifname).addresses
            subnet = lab.topology.network(attachment.network).subnet
            info = json.loads(host.check_output(f"ip -j -4 addr show dev {ifname}"))
            prefixes = {a["prefixlen"] for a in info[0]["addr_info"]}
            assert prefixes == {subnet.prefixlen}, (node.name, ifname)
            seen.add(ifname)
        others = json.loads(host.check_output("ip -j -4 addr show scope global"))
        assert {link["ifname"] for link in others} == seen, f"{node.name} has extra interfaces"


def test_gateway_forwards(lab: DockerBackend) -> None:
    for node in lab.topology.nodes.values():
        for key, value in node.sysctls.items():
            assert str(lab.host(node.name).sysctl(key)) == value, (node.name, key)
    assert lab.topology.node("gateway").sysctls["net.ipv4.ip_forward"] == "1"


def test_client_reaches_the_gateway_but_not_the_lan(lab: DockerBackend) -> None:
    gateway = lab.topology.node("gateway")
    host1 = lab.topology.node("host1").address("lan")
    assert _ping(lab, "client", gateway.address("internet")) == 0
    assert _ping(lab, "gateway", host1) == 0, "the LAN itself works"
    # The negative baseline: without the tunnel the LAN is out of the client's reach.
    assert _ping(lab, "client", host1, count=2) != 0, "the client reaches the LAN without a VPN"
    client = lab.topology.node("client").address("internet")
    assert _ping(lab, "host1", client, count=2) != 0, "the LAN reaches the client without a VPN"


def test_lan_hosts_return_the_vpn_pool_to_the_gateway(lab: DockerBackend) -> None:
    gateway = lab.topology.node("gateway")
    pool = gateway.labels["vpnlab.vpn.pool"]
    hosts = [n for n in lab.topology.nodes_on("lan") if n.name != "gateway"]
    assert {h.name for h in hosts} >= {"host1", "host2", "host3"}
    for host in hosts:
        routes = json.loads(lab.ensure(host.name, ["ip", "-j", "route", "show", pool]))
        assert [r.get("gateway") for r in routes] == [str(gateway.address("lan"))], host.name


def test_routed_pool_traffic_crosses_the_lan(lab: DockerBackend) -> None:
    """Packets from the VPN pool (not the LAN's subnet) between gateway and hosts get through:
    what the tunnel's traffic looks like on the LAN, here without a VPN."""
    gateway = lab.topology.node("gateway")
    pool = ipaddress.ip_network(gateway.labels["vpnlab.vpn.pool"])
    source = f"{pool[1]}/32"
    lab.ensure("gateway", ["ip", "addr", "add", source, "dev", "lo"])
    try:
        for host in ("host1", "host2"):
            target = str(lab.topology.node(host).address("lan"))
            argv = ["ping", "-n", "-c", "2", "-i", "0.2", "-W", "1", "-I", str(pool[1]), target]
            done = lab.exec("gateway", argv, timeout=10)
            assert done.returncode == 0, f"pool → {host}: {done.stdout}"
    finally:
        lab.ensure("gateway", ["ip", "addr", "del", source, "dev", "lo"])


# -- commands ----------------------------------------------------------------------------------
def test_every_node_has_its_ipv6_addresses(lab: DockerBackend) -> None:
    """compose gives each interface the IPv6 address of the compose files beside the IPv4 one,
    usable (not tentative); internal networks give no IPv6 default route."""
    for node in lab.topology.nodes.values():
        seen = set()
        for attachment in node.attachments:
            subnet6 = lab.topology.network(attachment.network).subnet6
            assert subnet6 is not None and attachment.address6 is not None
            ifname = lab.interface(node.name, attachment.network)
            info = json.loads(
                lab.ensure(node.name, ["ip", "-j", "-6", "addr", "show", "dev", ifname])
            )
            global_ = [a for a in info[0]["addr_info"] if a.get("scope") == "global"]
            assert [(a["local"], a["prefixlen"]) for a in global_] == [
                (str(attachment.address6), subnet6.prefixlen)
            ], (node.name, ifname)
            assert not global_[0].get("tentative"), (node.name, ifname)
            seen.add(ifname)
        links = json.loads(
            lab.ensure(node.name, ["ip", "-j", "-6", "addr", "show", "scope", "global"])
        )
        assert {link["ifname"] for link in links} == seen, f"{node.name} has extra interfaces"
        default = lab.ensure(node.name, ["ip", "-6", "route", "show", "default"])
        assert default.strip() == "", f"{node.name} has an IPv6 default route"


def test_ping6_between_nodes_on_a_segment_but_not_across(lab: DockerBackend) -> None:
    topo = lab.topology
    assert _ping(lab, "client", topo.node("gateway").address6("internet")) == 0
    assert _ping(lab, "host1", topo.node("host2").address6("lan")) == 0
    assert _ping(lab, "host3", topo.node("gateway").address6("lan")) == 0
    assert _ping(lab, "client", topo.node("host1").address6("lan"), count=2) != 0


def test_gateway_forwards_ipv6(lab: DockerBackend) -> None:
    """From the gateway's compose sysctls. (Docker turns IPv6 forwarding on in the containers
    it attaches to an IPv6 network, so the others are not checked here; tests/netns checks that
    only the gateway forwards there.)"""
    assert str(lab.host("gateway").sysctl("net.ipv6.conf.all.forwarding")) == "1"


def test_lan_hosts_return_the_ipv6_pool_to_the_gateway(lab: DockerBackend) -> None:
    gateway = lab.topology.node("gateway")
    pool6 = gateway.labels["vpnlab.vpn.pool6"]
    for host in [n for n in lab.topology.nodes_on("lan") if n.name != "gateway"]:
        routes = json.loads(lab.ensure(host.name, ["ip", "-j", "-6", "route", "show", pool6]))
        assert [r.get("gateway") for r in routes] == [str(gateway.address6("lan"))], host.name


def test_routed_ipv6_pool_traffic_crosses_the_lan(lab: DockerBackend) -> None:
    """As test_routed_pool_traffic_crosses_the_lan, for IPv6: packets from the VPN's IPv6 pool
    between gateway and hosts get through Docker's firewall."""
    gateway = lab.topology.node("gateway")
    pool6 = ipaddress.IPv6Network(gateway.labels["vpnlab.vpn.pool6"])
    source = f"{pool6[1]}/128"
    lab.ensure("gateway", ["ip", "-6", "addr", "add", source, "dev", "lo", "nodad"])
    try:
        for host in ("host1", "host2"):
            target = str(lab.topology.node(host).address6("lan"))
            argv = ["ping", "-n", "-c", "2", "-i", "0.2", "-W", "1", "-I", str(pool6[1]), target]
            done = lab.exec("gateway", argv, timeout=10)
            assert done.returncode == 0, f"pool6 → {host}: {done.stdout}"
    finally:
        lab.ensure("gateway", ["ip", "-6", "addr", "del", source, "dev", "lo"])


def test_exec_passes_input_checks_status_and_times_out(lab: DockerBackend) -> None:
    done = lab.exec("host1", ["cat"], input=b"through stdin\n")
    assert (done.returncode, done.stdout) == (0, "through stdin\n")
    done = lab.exec("host1", ["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (done.returncode, done.stdout, done.stderr) == (3, "out\n", "err\n")
    with pytest.raises(LabError, match="exited with status 1"):
        lab.exec("host1", ["false"], check=True)
    started = time.monotonic()
    with pytest.raises(ExecTimeout) as caught:
        lab.exec("host1", ["sleep", "30"], timeout=1)
    assert isinstance(caught.value, subprocess.TimeoutExpired)
    assert time.monotonic() - started < 10
    assert "sleep 30" not in lab.ensure("host1", ["ps", "-eo", "args"])


def test_workdir_is_lab_on_every_node(lab: DockerBackend) -> None:
    note = lab.workdir / "shared" / "note.txt"
    note.parent.mkdir(exist_ok=True)
    note.write_text("seen from the node\n")
    assert lab.node_path(note) == "/lab/shared/note.txt"
    for node in lab.topology.nodes:
        assert lab.ensure(node, ["cat", lab.node_path(note)]) == "seen from the node\n"
    with pytest.raises(LabError, match="outside the run's work directory"):
        lab.node_path(Path("/etc/passwd"))
    assert lab.vpn_argv() == ["vpn"]


def test_spawn_signal_wait_and_logs(lab: DockerBackend) -> None:
    script = 'echo started; trap "echo got TERM; exit 3" TERM; while :; do sleep 0.1; done'
    proc = lab.spawn("host2", ["sh", "-c", script], name="looper")
    assert proc.log_path == lab.workdir / "logs" / "looper.log"
    deadline = time.monotonic() + 10
    while "started" not in lab.logs(proc) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lab.logs(proc) == "started\n"
    assert lab.wait(proc, 0.3) is None, "still running"
    lab.signal(proc, signal.SIGTERM)
    assert lab.wait(proc, 10) == 3
    assert lab.logs(proc) == "started\ngot TERM\n"
    lab.signal(proc, signal.SIGTERM)  # already gone: no error

    sleeper = lab.spawn("host2", ["sleep", "300"], name="sleeper")
    with pytest.raises(LabError, match="still running"):
        lab.spawn("host2", ["sleep", "1"], name="sleeper")
    assert lab.stop(sleeper, timeout=5) == -signal.SIGTERM
    killed = lab.spawn("host2", ["sleep", "300"], name="killed")
    lab.signal(killed, signal.SIGKILL)
    assert lab.wait(killed, 10) == -signal.SIGKILL
    quick = lab.spawn("host2", ["sh", "-c", "exit 7"], name="quick")
    assert lab.wait(quick, 10) == 7
    missing = lab.spawn("host2", ["no-such-program"], name="missing")
    assert lab.wait(missing, 10) == 127
    assert "no-such-program" in lab.logs(missing)


# -- network -----------------------------------------------------------------------------------
def test_link_down_cuts_the_cable_and_link_up_restores_it(lab: DockerBackend) -> None:
    _root()
    gateway = lab.topology.node("gateway").address("internet")
    client = lab.topology.node("client").address("internet")
    ifname = lab.interface("client", "internet")
    assert _ping(lab, "client", gateway) == 0
    try:
        lab.link_down("client", "internet")
        assert _ping(lab, "client", gateway, count=2) != 0
        # Like a pulled cable: the node keeps its address and interface.
        assert str(client) in lab.host("client").interface(ifname).addresses
    finally:
        lab.link_up("client", "internet")
    deadline = time.monotonic() + 10
    while _ping(lab, "client", gateway) != 0:
        assert time.monotonic() < deadline, "link_up did not restore client → gateway"


def test_capture_holds_the_pings(lab: DockerBackend) -> None:
    _root()
    dpkt = pytest.importorskip("dpkt", reason="dpkt reads the pcap (pip install dpkt)")
    client = lab.topology.node("client").address("internet")
    gateway = lab.topology.node("gateway").address("internet")
    name = f"pings-{secrets.token_hex(2)}"
    with lab.capture("internet", name, "icmp") as capture:
        assert _ping(lab, "client", gateway, count=3) == 0
    assert capture.path == lab.workdir / "captures" / f"{name}.pcap"
    assert capture.path.stat().st_size > 24, "empty pcap"
    requests = replies = 0
    with capture.path.open("rb") as f:
        for _, frame in dpkt.pcap.Reader(f):
            ip = dpkt.ethernet.Ethernet(frame).data
            if not isinstance(ip, dpkt.ip.IP) or not isinstance(ip.data, dpkt.icmp.ICMP):
                continue
            pair = (str(ipaddress_of(ip.src)), str(ipaddress_of(ip.dst)))
            if ip.data.type == dpkt.icmp.ICMP_ECHO and pair == (str(client), str(gateway)):
                requests += 1
            if ip.data.type == dpkt.icmp.ICMP_ECHOREPLY and pair == (str(gateway), str(client)):
                replies += 1
    assert (requests, replies) == (3, 3)


def ipaddress_of(raw: bytes) -> str:
    return ".".join(str(b) for b in raw)


# -- errors that say what to do ---------------------------------------------------------------
def test_up_without_the_image_says_make_images(engine, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("VPNLAB_IMAGE", f"vpnlab/missing-{secrets.token_hex(3)}:none")
    backend = DockerBackend(topology(tmp_path), run_id(), tmp_path)
    try:
        with pytest.raises(LabError, match="make images"):
            backend.up()
    finally:
        backend.down()
    assert leftovers(engine, backend.project) == []


def test_a_second_lab_is_refused_while_one_is_up(lab: DockerBackend, tmp_path: Path) -> None:
    assert_refused_for(lab.run_id, tmp_path)
    assert lab.exec("client", ["true"]).returncode == 0, "the first lab is untouched"


def test_another_process_waits_while_this_lab_lives(lab: DockerBackend, tmp_path: Path) -> None:
    """One lab fits on an engine: a second run in another process waits for the first."""
    owners = {
        (n.attrs.get("Labels") or {}).get("vpnlab.owner")
        for n in lab.engine().networks.list(filters={"label": f"{PROJECT_LABEL}={lab.project}"})
    }
    assert owners == {docker_lab.owner(os.getpid())}
    code = (
        "import sys; from pathlib import Path;"
        "from lab.backends.docker.backend import DockerBackend;"
        "from lab.model.compose import default_files, load;"
        f"w = Path({str(tmp_path)!r}); t = load(default_files(Path({str(REPO)!r})));"
        f"b = DockerBackend(t, {run_id()!r}, w, wait_for_other=3)\n"
        "try:\n b.up()\nfinally:\n b.down()"
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    waited = time.monotonic() - started
    assert done.returncode != 0
    assert "waiting up to" in done.stderr and lab.project in done.stderr
    assert f"another lab is up (run {lab.run_id})" in done.stderr
    assert waited >= 3
    assert lab.exec("client", ["true"]).returncode == 0, "the first lab is untouched"


def test_down_from_a_fresh_backend_removes_everything(lab: DockerBackend, engine) -> None:
    """Last: `make down` after a crash has only the run id and the compose files."""
    assert leftovers(engine, lab.project)
    fresh = DockerBackend(lab.topology, lab.run_id, lab.workdir)
    fresh.down()
    assert leftovers(engine, lab.project) == []
    fresh.down()  # twice is fine
    assert lab.run_id not in docker_lab.lab_runs(engine)
