"""lab.backends.netns on the real kernel: the compose topology as namespaces, veths and bridges.

Every lab here has its own random run id (so its own names) and is taken down in teardown,
on failure too. Traffic goes only between the namespaces these tests create.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.backends.base import ExecTimeout
from lab.backends.netns.backend import NetnsBackend
from lab.backends.netns.kernel import ETC_NETNS_DIR, NETNS_DIR
from lab.backends.netns.lifecycle import require_root
from lab.backends.registry import make_backend, new_run_id
from lab.cli import ERROR_STATUS
from lab.model import LabError, Topology
from lab.model.compose import default_files, load

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(
        os.geteuid() != 0,
        reason="needs root for network namespaces (run as root: sudo make test)",
    ),
    pytest.mark.skipif(shutil.which("ip") is None, reason="needs ip (apt-get install iproute2)"),
]


def topology(*extra: str) -> Topology:
    return load(default_files(REPO, extra), {})


def run_namespaces(prefix: str) -> list[str]:
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(f"{prefix}-"))


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for(what: str, predicate, timeout: float = 5.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)
    return value


def ping(lab: NetnsBackend, node: str, address: object, count: int = 1) -> int:
    argv = ["ping", "-n", "-c", str(count), "-i", "0.2", "-W", "1", str(address)]
    return lab.exec(node, argv, timeout=10).returncode


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[NetnsBackend]:
    """A lab of this test's own, not yet up; taken down afterwards whatever happened."""
    backend = NetnsBackend(topology(), new_run_id(), tmp_path / "lab")
    try:
        yield backend
    finally:
        backend.down()
        assert run_namespaces(backend.prefix) == []


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetnsBackend]:
    """One lab (lab.yml) shared by the tests that only look or restore what they change."""
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    backend = NetnsBackend(topology(), new_run_id(), tmp_path_factory.mktemp("netns-lab"))
    with backend:
        yield backend
    assert run_namespaces(backend.prefix) == []


# -- up -----------------------------------------------------------------------------------------
def test_up_creates_a_namespace_per_node_and_one_for_the_bridges(lab: NetnsBackend) -> None:
    nodes = list(lab.topology.nodes)
    assert run_namespaces(lab.prefix) == sorted([f"{lab.prefix}-{n}" for n in [*nodes, "lab"]])
    host_links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert lab.prefix not in host_links, "the host's namespace must stay untouched"
    bridges = lab.exec("client", ["true"])  # the node namespace answers
    assert bridges.returncode == 0
    lab_links = subprocess.run(
        ["ip", "-n", lab.lab_ns, "-o", "-d", "link", "show", "type", "bridge"],
        capture_output=True,
        text=True,
    ).stdout
    assert lab_links.count("bridge") >= len(lab.topology.networks)


def test_every_address_is_on_the_interface_the_kernel_reports(lab: NetnsBackend) -> None:
    for node in lab.topology.nodes.values():
        for i, attachment in enumerate(node.attachments):
            ifname = lab.interface(node.name, attachment.network)
            assert ifname == f"eth{i}"
            prefixlen = lab.topology.network(attachment.network).subnet.prefixlen
            shown = lab.ensure(node.name, ["ip", "-4", "-o", "addr", "show", "dev", ifname])
            assert f"inet {attachment.address}/{prefixlen} " in shown
        default = lab.ensure(node.name, ["ip", "-4", "route", "show", "default"])
        assert default.strip() == "", f"{node.name} must have no default route"


def test_gateway_forwards_and_the_others_do_not(lab: NetnsBackend) -> None:
    forwarding = ["cat", "/proc/sys/net/ipv4/ip_forward"]
    assert lab.ensure("gateway", forwarding).strip() == "1"
    assert lab.ensure("host1", forwarding).strip() == "0"
    assert lab.ensure("client", forwarding).strip() == "0"


def test_client_reaches_the_gateway_but_not_the_lan(lab: NetnsBackend) -> None:
    topo = lab.topology
    assert ping(lab, "client", topo.node("gateway").address("internet")) == 0
    blocked = lab.exec(
        "client", ["ping", "-c", "1", "-W", "1", str(topo.node("host1").address("lan"))]
    )
    assert blocked.returncode != 0
    assert "unreachable" in blocked.stderr.lower()


def test_lan_hosts_reach_the_gateway_and_route_the_pool_to_it(lab: NetnsBackend) -> None:
    gateway_lan = lab.topology.node("gateway").address("lan")
    for host in ("host1", "host2", "host3"):
        assert ping(lab, host, gateway_lan) == 0
        route = lab.ensure(host, ["ip", "-4", "route", "show", "192.168.53.0/24"])
        assert f"via {gateway_lan}" in route


def test_node_names_resolve_like_dockers_dns(lab: NetnsBackend) -> None:
    def first(node: str, database: str, name: str) -> str:
        return lab.ensure(node, ["getent", database, name]).split()[0]

    assert first("client", "ahostsv4", "gateway") == "10.9.0.11"
    assert first("host1", "ahostsv4", "gateway") == "192.168.60.11"
    assert first("client", "ahostsv6", "gateway") == "fd00:9::11"
    assert first("host1", "ahostsv6", "gateway") == "fd00:60::11"
    assert lab.exec("client", ["getent", "hosts", "host1"]).returncode != 0


# -- IPv6 ---------------------------------------------------------------------------------------
def test_every_node_has_its_ipv6_addresses_at_once(lab: NetnsBackend) -> None:
    """Each interface carries the compose file's IPv6 address beside the IPv4 one, usable
    at once (nodad: never tentative), and no node has an IPv6 default route."""
    checked = 0
    for node in lab.topology.nodes.values():
        for attachment in node.attachments:
            network = lab.topology.network(attachment.network)
            assert attachment.address6 is not None and network.subnet6 is not None
            ifname = lab.interface(node.name, attachment.network)
            shown = lab.ensure(node.name, ["ip", "-6", "-o", "addr", "show", "dev", ifname])
            line = next((x for x in shown.splitlines() if f" {attachment.address6}/" in x), "")
            assert f"inet6 {attachment.address6}/{network.subnet6.prefixlen} scope global" in line
            assert "tentative" not in line and "dadfailed" not in line
            assert "nodad" in line, "added without duplicate address detection"
            checked += 1
        default = lab.ensure(node.name, ["ip", "-6", "route", "show", "default"])
        assert default.strip() == "", f"{node.name} must have no IPv6 default route"
    assert checked == sum(len(n.attachments) for n in lab.topology.nodes.values())
    bridges = subprocess.run(
        ["ip", "-n", lab.lab_ns, "-6", "-o", "addr"], capture_output=True, text=True
    )
    assert bridges.stdout.strip() == "", "the lab namespace's bridges have no IPv6 address"


def test_ping6_between_nodes_on_a_segment_but_not_across(lab: NetnsBackend) -> None:
    topo = lab.topology
    assert ping(lab, "client", topo.node("gateway").address6("internet")) == 0
    assert ping(lab, "host1", topo.node("host2").address6("lan")) == 0
    assert ping(lab, "host3", topo.node("gateway").address6("lan")) == 0
    blocked = lab.exec(
        "client", ["ping", "-c", "1", "-W", "1", str(topo.node("host1").address6("lan"))]
    )
    assert blocked.returncode != 0
    assert "unreachable" in blocked.stderr.lower()


def test_lan_hosts_route_the_ipv6_pool_to_the_gateway(lab: NetnsBackend) -> None:
    gateway = lab.topology.node("gateway")
    pool6 = ipaddress.IPv6Network(gateway.labels["vpnlab.vpn.pool6"])
    for host in ("host1", "host2", "host3"):
        route = lab.ensure(host, ["ip", "-6", "route", "show", str(pool6)])
        assert f"{pool6} via {gateway.address6('lan')} dev eth0" in route


def test_gateway_forwards_ipv6_and_the_others_do_not(lab: NetnsBackend) -> None:
    forwarding = ["cat", "/proc/sys/net/ipv6/conf/all/forwarding"]
    assert lab.ensure("gateway", forwarding).strip() == "1"
    for node in ("client", "host1", "host2", "host3"):
        assert lab.ensure(node, forwarding).strip() == "0"
    disabled = ["cat", "/proc/sys/net/ipv6/conf/all/disable_ipv6"]
    assert all(lab.ensure(n, disabled).strip() == "0" for n in lab.topology.nodes)


# -- testinfra ----------------------------------------------------------------------------------
def test_testinfra_host_sees_the_namespace(lab: NetnsBackend) -> None:
    gateway = lab.host("gateway")
    lan_if = lab.interface("gateway", "lan")
    addresses = gateway.interface(lan_if).addresses
    assert [a for a in addresses if not a.startswith("fe80:")] == ["192.168.60.11", "fd00:60::11"]
    assert gateway.interface(lan_if).exists
    assert gateway.sysctl("net.ipv4.ip_forward") == 1
    assert gateway.addr("192.168.60.5").is_reachable
    assert gateway.run("ip -4 -o addr show dev %s", lan_if).rc == 0
    assert not lab.host("client").addr("192.168.60.5").is_reachable

    port = 48000 + os.getpid() % 1000
    code = (
        "import socket, time; s = socket.socket(); "
        f"s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', {port})); "
        "s.listen(); print('listening', flush=True); time.sleep(30)"
    )
    server = lab.spawn("gateway", [sys.executable, "-c", code], name="listener")
    try:
        wait_for("the listener", lambda: "listening" in lab.logs(server))
        assert gateway.socket(f"tcp://0.0.0.0:{port}").is_listening
        assert not lab.host("client").socket(f"tcp://0.0.0.0:{port}").is_listening
    finally:
        lab.stop(server, timeout=2)


# -- processes ----------------------------------------------------------------------------------
def test_spawn_signal_wait_and_logs(lab: NetnsBackend) -> None:
    code = textwrap.dedent(
        """
        import signal, subprocess, sys, time
        out = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", "eth0"],
                             capture_output=True, text=True).stdout
        print("ready", out.split()[3], flush=True)
        def bye(*_):
            print("bye", flush=True)
            sys.exit(7)
        signal.signal(signal.SIGTERM, bye)
        time.sleep(60)
        """
    )
    proc = lab.spawn("client", [sys.executable, "-c", code], name="greeter")
    assert proc.log_path == lab.workdir / "logs" / "greeter.log"
    wait_for("the greeting", lambda: "ready" in lab.logs(proc))
    assert "ready 10.9.0.5/24" in lab.logs(proc), "the program runs in the client's namespace"
    record = json.loads((lab.workdir / "state.json").read_text())
    assert any(p["name"] == "greeter" for p in record["pids"])
    assert lab.wait(proc, 0.2) is None
    lab.signal(proc, signal.SIGTERM)
    assert lab.wait(proc, 5) == 7
    assert "bye" in lab.logs(proc)
    lab.signal(proc, signal.SIGTERM)  # already gone: no error

    stubborn = lab.spawn(
        "host1",
        [
            sys.executable,
            "-c",
            "import signal,time; signal.signal(15, signal.SIG_IGN); "
            "print('up', flush=True); time.sleep(60)",
        ],
        name="stubborn",
    )
    wait_for("the stubborn program", lambda: "up" in lab.logs(stubborn))
    assert lab.stop(stubborn, timeout=0.5) == -signal.SIGKILL


def test_exec_errors_are_clear(lab: NetnsBackend) -> None:
    with pytest.raises(LabError, match="no node 'nosuch'"):
        lab.exec("nosuch", ["true"])
    with pytest.raises(LabError, match=r"exited with status 3: oops"):
        lab.exec("client", ["sh", "-c", "echo oops >&2; exit 3"], check=True)
    started = time.monotonic()
    with pytest.raises(ExecTimeout, match=r"did not finish within 0\.5 s"):
        lab.exec("client", ["sh", "-c", "sleep 20 & sleep 30"], timeout=0.5)
    assert time.monotonic() - started < 5
    assert lab.exec("client", ["cat"], input=b"through stdin").stdout == "through stdin"


# -- links and captures -------------------------------------------------------------------------
def test_link_down_cuts_the_cable_and_link_up_restores_it(lab: NetnsBackend) -> None:
    gateway = lab.topology.node("gateway").address("internet")
    assert ping(lab, "client", gateway) == 0
    lab.link_down("client", "internet")
    try:
        assert ping(lab, "client", gateway) != 0
        shown = lab.ensure("client", ["ip", "-4", "-o", "addr", "show"])
        assert "10.9.0.5/24" in shown, "the node keeps its address, like a pulled cable"
        assert ping(lab, "host1", lab.topology.node("gateway").address("lan")) == 0
    finally:
        lab.link_up("client", "internet")
    wait_for("the link back", lambda: ping(lab, "client", gateway) == 0, timeout=10)


def test_capture_records_the_pings_of_its_network_only(lab: NetnsBackend) -> None:
    dpkt = pytest.importorskip("dpkt", reason="reading pcaps needs dpkt (pip install dpkt)")
    if shutil.which("tcpdump") is None:
        pytest.skip("capturing needs tcpdump (apt-get install tcpdump)")
    client = lab.topology.node("client").address("internet")
    gateway = lab.topology.node("gateway").address("internet")
    with lab.capture("internet", "pings", "icmp") as internet, lab.capture("lan", "lan") as lan:
        assert ping(lab, "client", gateway, count=3) == 0
    assert internet.path == lab.workdir / "captures" / "pings.pcap"
    seen = []
    with open(internet.path, "rb") as f:
        for _, frame in dpkt.pcap.Reader(f):
            packet = dpkt.ethernet.Ethernet(frame).data
            assert isinstance(packet.data, dpkt.icmp.ICMP)
            seen.append((ipaddress.ip_address(packet.src), ipaddress.ip_address(packet.dst)))
    assert seen.count((client, gateway)) == 3
    assert seen.count((gateway, client)) == 3
    with open(lan.path, "rb") as f:
        frames = [dpkt.ethernet.Ethernet(frame) for _, frame in dpkt.pcap.Reader(f)]
    assert not any(
        isinstance(e.data, dpkt.ip.IP) and ipaddress.ip_address(e.data.src) == client
        for e in frames
    ), "the client's pings must not cross the LAN"


# -- down ---------------------------------------------------------------------------------------
def test_down_removes_everything_and_twice_is_harmless(fresh: NetnsBackend) -> None:
    t0 = time.monotonic()
    fresh.up()
    up_seconds = time.monotonic() - t0
    extra = fresh.spawn("client", ["sleep", "60"], name="sleeper")
    record = json.loads((fresh.workdir / "state.json").read_text())
    pids = [p["pid"] for p in record["pids"]]
    assert len(pids) == len(fresh.topology.nodes) + 1 and all(alive(p) for p in pids)
    assert (ETC_NETNS_DIR / fresh.namespace("client") / "hosts").exists()
    t0 = time.monotonic()
    fresh.down()
    down_seconds = time.monotonic() - t0
    assert run_namespaces(fresh.prefix) == []
    assert not any(alive(p) for p in pids)
    assert not (fresh.workdir / "state.json").exists()
    assert not (ETC_NETNS_DIR / fresh.namespace("client")).exists()
    assert fresh.wait(extra, 1) is not None
    fresh.down()  # a no-op
    assert up_seconds < 2.0, f"lab up took {up_seconds:.2f} s"
    assert down_seconds < 2.0, f"lab down took {down_seconds:.2f} s"
    print(f"lab up {up_seconds:.2f} s, down {down_seconds:.2f} s")


def test_down_from_the_record_after_a_crash(tmp_path: Path) -> None:
    """A process brings a lab up and dies without down; a fresh backend object removes it all."""
    run_id, workdir = new_run_id(), tmp_path / "crashed"
    script = textwrap.dedent(
        f"""
        import os
        from pathlib import Path
        from lab.backends.netns.backend import NetnsBackend
        from lab.model.compose import default_files, load
        lab = NetnsBackend(load(default_files(Path({str(REPO)!r})), {{}}), {run_id!r},
                           Path({str(workdir)!r}))
        lab.up()
        lab.spawn("gateway", ["sleep", "60"], name="orphan")
        os._exit(0)  # no down, no cleanup: as if killed
        """
    )
    prefix = NetnsBackend(topology(), run_id, workdir).prefix
    try:
        subprocess.run([sys.executable, "-c", script], cwd=REPO, check=True, timeout=60)
        record = json.loads((workdir / "state.json").read_text())
        pids = [p["pid"] for p in record["pids"]]
        assert run_namespaces(prefix) and all(alive(p) for p in pids)
    finally:
        NetnsBackend(topology(), run_id, workdir).down()
    assert run_namespaces(prefix) == []
    wait_for("the orphans to end", lambda: not any(alive(p) for p in pids))
    assert not (workdir / "state.json").exists()


def test_a_run_id_in_use_is_refused(fresh: NetnsBackend, tmp_path: Path) -> None:
    fresh.up()
    twin = make_backend("netns", fresh.topology, fresh.run_id, tmp_path / "twin")
    with pytest.raises(LabError, match=f"namespace {fresh.prefix}-lab already exists"):
        twin.up()
    assert ping(fresh, "client", "10.9.0.11") == 0, "the refusal left the first lab alone"
    again = NetnsBackend(fresh.topology, new_run_id(), fresh.workdir)
    with pytest.raises(LabError, match="already records a lab"):
        again.up()


def test_a_failing_healthcheck_fails_up_and_cleans_up(tmp_path: Path) -> None:
    compose = tmp_path / "sick.yml"
    compose.write_text(
        textwrap.dedent(
            """
            services:
              host1:
                healthcheck: {test: ["CMD-SHELL", "echo not yet; exit 1"]}
            """
        )
    )
    topo = load([*default_files(REPO), compose], {})
    backend = NetnsBackend(topo, new_run_id(), tmp_path / "lab")
    backend.health_timeout = 0.5
    with pytest.raises(LabError, match=r"host1: .*exit 1: not yet"):
        backend.up()
    assert run_namespaces(backend.prefix) == []
    assert not (tmp_path / "lab" / "state.json").exists()


def test_a_dying_node_command_fails_up(tmp_path: Path) -> None:
    compose = tmp_path / "dying.yml"
    compose.write_text('services: {client: {command: ["sh", "-c", "echo broken >&2; exit 4"]}}\n')
    backend = NetnsBackend(load([*default_files(REPO), compose], {}), new_run_id(), tmp_path)
    with pytest.raises(LabError, match=r"node client: .* exited with status 4: broken"):
        backend.up()
    assert run_namespaces(backend.prefix) == []


def test_an_ipv4_only_lab_keeps_ipv6_off(tmp_path: Path) -> None:
    """A node on IPv4-only networks has no IPv6 at all (as Docker gives it), while a node on a
    dual-stack one has it: here a lab whose lan is IPv4-only, its internet dual-stack."""
    compose = tmp_path / "lab.yml"
    compose.write_text(
        textwrap.dedent(
            """
            networks:
              internet:
                enable_ipv6: true
                ipam: {config: [{subnet: 10.9.0.0/24}, {subnet: "fd00:9::/64"}]}
              lan:
                ipam: {config: [{subnet: 192.168.60.0/24}]}
            services:
              client:
                networks: {internet: {ipv4_address: 10.9.0.5, ipv6_address: "fd00:9::5"}}
              host1:
                networks: {lan: {ipv4_address: 192.168.60.5}}
            """
        )
    )
    backend = NetnsBackend(load([compose], {}), new_run_id(), tmp_path / "lab")
    with backend:
        disabled = ["cat", "/proc/sys/net/ipv6/conf/all/disable_ipv6"]
        assert backend.ensure("host1", disabled).strip() == "1"
        assert backend.ensure("host1", ["ip", "-6", "-o", "addr"]).strip() == ""
        assert backend.ensure("client", disabled).strip() == "0"
        assert "inet6 fd00:9::5/64" in backend.ensure("client", ["ip", "-6", "-o", "addr"])
    assert run_namespaces(backend.prefix) == []


def test_not_root_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(LabError, match="network namespaces need root: sudo make"):
        require_root()


# -- the command line ---------------------------------------------------------------------------
def test_cli_up_status_exec_capture_down(tmp_path: Path) -> None:
    env = {**os.environ, "VPNLAB_STATE_DIR": str(tmp_path / "state"), "PYTHONPATH": str(REPO)}

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "lab", *argv],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    up = cli("up", "--backend", "netns", "--with", "clients")
    current = json.loads((tmp_path / "state" / "current.json").read_text())
    prefix = NetnsBackend(topology(), current["run_id"], Path(current["workdir"])).prefix
    try:
        assert up.returncode == 0, up.stderr
        assert "lab up" in up.stderr and "s]" in up.stderr  # progress on stderr, data on stdout
        assert len(run_namespaces(prefix)) == 8
        status = cli("status")
        assert status.returncode == 0
        assert re.search(
            r"client3 +up +\S+ +internet=10\.9\.0\.7,fd00:9::7 \(eth0\)", status.stdout
        )
        pinged = cli("exec", "client2", "--", "ping", "-c", "1", "-W", "1", "10.9.0.11")
        assert pinged.returncode == 0 and "1 received" in pinged.stdout
        assert cli("exec", "host1", "--", "sh", "-c", "exit 5").returncode == 5
        pcap = tmp_path / "quiet.pcap"
        captured = cli("capture", "lan", "--seconds", "0.2", "-w", str(pcap))
        assert captured.returncode == 0, captured.stderr
        assert pcap.read_bytes()[:4] in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4")  # a pcap
        assert cli("up", "--backend", "netns").returncode == ERROR_STATUS
    finally:
        down = cli("down")
    assert down.returncode == 0, down.stderr
    assert run_namespaces(prefix) == []
    assert "no lab is up" in cli("down").stderr
    assert cli("status").returncode == ERROR_STATUS
