"""`vpnlab`, the installed console script, end to end on both backends.

One lab per backend (compose/lab.yml + slow-link.yml, so an impairment is declared) serves the
verbs that act on a running lab; the last tests take it down and bring up their own, since a
Docker engine holds one lab at a time. Every lab lives under its own VPNLAB_STATE_DIR and is
removed with `vpnlab down --all`, on failure too.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import pytest

from lab.model.compose import default_files, load
from lab.model.records import REPO_ROOT
from lab.model.topology import Topology
from tests.e2e.conftest import BACKENDS, backend_skip_reason

VPNLAB = str(Path(sys.executable).with_name("vpnlab"))
SCHEMA = json.loads((REPO_ROOT / "docs" / "inspect.schema.json").read_text())
EXTRA = ["slow-link"]


@dataclass
class Lab:
    backend: str
    env: dict[str, str]
    topology: Topology
    up_log: str

    def run(
        self, *args: str, input: str | None = None, timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [VPNLAB, *args],
            env=self.env,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def ok(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        done = self.run(*args, timeout=timeout)
        assert done.returncode == 0, f"vpnlab {' '.join(args)}: {done.stdout}\n{done.stderr}"
        return done

    def address(self, node: str, network: str) -> str:
        return str(self.topology.node(node).address(network))


def loss_probabilities(rules: str) -> list[float]:
    """The drop probability of each `statistic` rule in `iptables -S` output."""
    return [
        float(line.split("--probability ")[1].split()[0])
        for line in rules.splitlines()
        if "--probability" in line
    ]


@pytest.fixture(scope="module", params=BACKENDS)
def lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    reason = backend_skip_reason(request.param)
    if reason:
        pytest.skip(reason)
    state = tmp_path_factory.mktemp(f"vpnlab-{request.param}")
    env = {**os.environ, "VPNLAB_STATE_DIR": str(state)}
    topology = load(default_files(REPO_ROOT, EXTRA), {})
    up = subprocess.run(
        [VPNLAB, "up", "--backend", request.param, "--with", ",".join(EXTRA), "--wait", "90"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    try:
        assert up.returncode == 0, up.stderr
        yield Lab(request.param, env, topology, up.stderr)
    finally:
        subprocess.run([VPNLAB, "down", "--all"], env=env, capture_output=True, timeout=300)


def test_up_reports_each_node_ready_and_applies_declared_impairment(lab: Lab) -> None:
    for node in lab.topology.nodes:
        assert f"✓ {node} ready" in lab.up_log, lab.up_log
    interface = (
        lab.ok(
            "exec", "client", "--", "ip", "-o", "route", "get", lab.address("gateway", "internet")
        )
        .stdout.split("dev ")[1]
        .split()[0]
    )
    qdisc = lab.ok("exec", "client", "--", "tc", "qdisc", "show", "dev", interface).stdout
    assert "tbf" in qdisc and "8Mbit" in qdisc, qdisc
    rules = lab.ok("exec", "client", "--", "iptables", "-S").stdout
    assert loss_probabilities(rules) == pytest.approx([0.01] * 4), rules


def test_inspect_json_follows_the_schema_and_the_topology(lab: Lab) -> None:
    done = lab.ok("inspect", "--json")
    document = json.loads(done.stdout)  # stdout is JSON alone: logs go to stderr
    jsonschema.validate(document, SCHEMA)
    assert document["backend"] == lab.backend
    nodes = {n["name"]: n for n in document["nodes"]}
    assert set(nodes) == set(lab.topology.nodes)
    for name, node in lab.topology.nodes.items():
        assert nodes[name]["state"] == "up"
        assert {(i["network"], i["address"]) for i in nodes[name]["interfaces"]} == {
            (a.network, str(a.address)) for a in node.attachments
        }
        assert {(i["network"], i["address6"]) for i in nodes[name]["interfaces"]} == {
            (a.network, str(a.address6)) for a in node.attachments
        }
        assert nodes[name]["tunnel"] is None  # no VPN started in this lab
    client_object = nodes["client"]["object"]
    if lab.backend == "docker":
        assert (
            subprocess.run(["docker", "inspect", client_object], capture_output=True).returncode
            == 0
        )
        # `vpnlab up` exits with the lab up: its networks say it is kept, so that no later run
        # takes it for the orphan of a killed one.
        owners = subprocess.run(
            ["docker", "network", "ls", "--filter",
             f"label=com.docker.compose.project=vpnlab-{document['run_id']}",
             "--format", '{{.Label "vpnlab.owner"}}'],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        assert owners and set(owners) == {"kept"}, owners
    else:
        assert (
            client_object
            in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        )
    assert {(n["name"], n["subnet"], n["subnet6"]) for n in document["networks"]} == {
        (n.name, str(n.subnet), str(n.subnet6)) for n in lab.topology.networks.values()
    }
    (declared,) = document["impairments"]
    assert (
        declared["link"].startswith("client:")
        and declared["rate"] == "8mbit"
        and declared["loss"] == 1.0
    )


def test_exec_passes_output_and_exit_status_through(lab: Lab) -> None:
    done = lab.run("exec", "client", "--", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert (done.returncode, done.stdout, done.stderr) == (7, "out\n", "err\n")
    missing = lab.run("exec", "nosuchnode", "--", "true")
    assert missing.returncode == 125 and "nosuchnode" in missing.stderr, missing.stderr


def test_shell_runs_on_the_node(lab: Lab) -> None:
    done = lab.run("shell", "client", input="ip -4 -o addr show\nexit 3\n")
    assert done.returncode == 3, done.stderr
    assert lab.address("client", "internet") in done.stdout


def test_capture_streams_pcap_live_to_a_reader(lab: Lab) -> None:
    capture = subprocess.Popen(
        [VPNLAB, "capture", "internet", "-w", "-", "--seconds", "20", "--filter", "icmp"],
        env=lab.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert capture.stdout is not None
    reader = subprocess.Popen(
        ["tcpdump", "-n", "-l", "-r", "-"],
        stdin=capture.stdout,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    capture.stdout.close()
    try:
        time.sleep(2)  # tcpdump listening
        lab.ok(
            "exec",
            "client",
            "--",
            "ping",
            "-c",
            "3",
            "-i",
            "0.2",
            lab.address("gateway", "internet"),
        )
        assert reader.stdout is not None
        ready, _, _ = select.select([reader.stdout], [], [], 10)
        assert ready, "tcpdump -r - read nothing while the capture ran"
        line = reader.stdout.readline().decode()
        assert "ICMP echo" in line and lab.address("client", "internet") in line, line
        assert capture.poll() is None, "the capture ended before the reader saw the packets"
    finally:
        capture.terminate()
        capture.wait(20)
        reader.wait(20)
    assert capture.returncode == 0


def test_impair_rate_loss_clear_and_netem_refused_by_name(lab: Lab) -> None:
    lab.ok("impair", "host1:lan", "--rate", "5mbit", "--loss", "3%")
    interface = json.loads(lab.ok("inspect", "--json").stdout)
    (host1,) = [n for n in interface["nodes"] if n["name"] == "host1"]
    assert host1["interfaces"][0]["impairment"] == {"rate": "5mbit", "loss": 3.0}
    ifname = host1["interfaces"][0]["interface"]
    assert (
        "rate 5Mbit" in lab.ok("exec", "host1", "--", "tc", "qdisc", "show", "dev", ifname).stdout
    )
    rules = lab.ok("exec", "host1", "--", "iptables", "-S").stdout
    assert loss_probabilities(rules) == pytest.approx([0.03] * 4), rules
    modules = Path("/lib/modules", os.uname().release)
    has_netem = Path("/sys/module/sch_netem").exists() or any(modules.rglob("sch_netem.ko*"))
    refused = lab.run("impair", f"host1:{ifname}", "--delay", "50ms")
    if has_netem:
        assert refused.returncode == 0, refused.stderr
    else:
        assert refused.returncode == 125 and "sch_netem" in refused.stderr, refused.stderr
        assert (
            "rate 5Mbit"
            in lab.ok("exec", "host1", "--", "tc", "qdisc", "show", "dev", ifname).stdout
        )
    lab.ok("impair", "host1:lan", "--clear")
    assert "tbf" not in lab.ok("exec", "host1", "--", "tc", "qdisc", "show", "dev", ifname).stdout
    assert "statistic" not in lab.ok("exec", "host1", "--", "iptables", "-S").stdout


def _pings(lab: Lab, node: str, address: str) -> bool:
    return lab.run("exec", node, "--", "ping", "-c", "1", "-W", "1", address).returncode == 0


def test_link_down_up_and_flap(lab: Lab) -> None:
    host2 = lab.address("host2", "lan")
    assert _pings(lab, "host1", host2)
    lab.ok("link", "host1:lan", "down")
    try:
        assert not _pings(lab, "host1", host2)
    finally:
        lab.ok("link", "host1:lan", "up")
    assert _pings(lab, "host1", host2)
    flap = subprocess.Popen(
        [VPNLAB, "link", "host1:lan", "flap", "--period", "3s", "--count", "2"],
        env=lab.env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert flap.stderr is not None
    seen = []
    try:
        for line in flap.stderr:
            if " down (" in line:
                seen.append(("down", _pings(lab, "host1", host2)))
            elif " up (" in line:
                time.sleep(0.3)
                seen.append(("up", _pings(lab, "host1", host2)))
    finally:
        flap.wait(30)
    assert flap.returncode == 0
    assert seen == [("down", False), ("up", True)] * 2, seen


def test_check_counts_failures_in_its_exit_status(lab: Lab, tmp_path: Path) -> None:
    before = lab.run("check", str(REPO_ROOT / "checks" / "before-tunnel.yml"))
    assert before.returncode == 0, before.stdout
    assert "✓ client -> host1: unreachable" in before.stdout
    wrong = tmp_path / "wrong.yml"
    wrong.write_text(
        "checks:\n"
        "  - client -> host1: reachable\n"
        "  - client -> gateway: reachable\n"
        "  - gateway: port 4433 open\n"
    )
    done = lab.run("check", str(wrong), "--json")
    assert done.returncode == 2, done.stdout
    report = json.loads(done.stdout)
    assert [c["passed"] for c in report["checks"]] == [False, True, False]
    assert report["failed"] == 2


def test_graph_and_completion_name_what_inspect_finds(lab: Lab) -> None:
    running = json.loads(lab.ok("inspect", "--json").stdout)
    mermaid = lab.ok("graph", "--format", "mermaid", "--with", ",".join(EXTRA)).stdout
    dot = lab.ok("graph", "--format", "dot", "--with", ",".join(EXTRA)).stdout
    for node in running["nodes"]:
        name = node["name"]
        for interface in node["interfaces"]:
            network, address = interface["network"], interface["address"]
            address6 = interface["address6"]
            assert f'node_{name} ---|"{address} {address6}"| net_{network}' in mermaid
            assert f'node_{name} -- net_{network} [label="{address}\\n{address6}"]' in dot
    names = lab.ok("_names").stdout.split()
    assert {n["name"] for n in running["nodes"]} <= set(names)
    assert "client:internet" in names


def test_scenario_run_writes_json_and_junit(lab: Lab, tmp_path: Path) -> None:
    lab.ok("down")  # one Docker lab at a time: the scenario brings up its own
    junit = tmp_path / "junit.xml"
    done = lab.run(
        "scenario",
        "run",
        "reachability-baseline",
        "--backend",
        lab.backend,
        "--json",
        "--junit",
        str(junit),
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    (result,) = json.loads(done.stdout)
    assert result["scenario"] == "reachability-baseline" and result["passed"]
    assert (
        'name="reachability-baseline"' in junit.read_text() and "<failure" not in junit.read_text()
    )
    listed = json.loads(lab.ok("scenario", "list", "--json").stdout)
    assert {"basic", "impairment"} <= {s["name"] for s in listed}


def test_up_with_vpn_waits_for_tunnels_then_the_tunnel_checks_pass(
    lab: Lab, tmp_path: Path
) -> None:
    lab.run("down")
    up = lab.run("up", "--backend", lab.backend, "--vpn", "--wait", "60", timeout=300)
    assert up.returncode == 0, up.stderr
    assert "VPN server listening" in up.stderr and "✓ client: tunnel up" in up.stderr, up.stderr
    nodes = {n["name"]: n for n in json.loads(lab.ok("inspect", "--json").stdout)["nodes"]}
    assert nodes["client"]["tunnel"]["state"] == "connected"
    assert nodes["gateway"]["tunnel"]["role"] == "server"
    through = lab.run("check", str(REPO_ROOT / "checks" / "through-tunnel.yml"))
    assert through.returncode == 0, through.stdout
    assert lab.run("check", str(REPO_ROOT / "checks" / "before-tunnel.yml")).returncode >= 2
    wrong_device = tmp_path / "wrong-device.yml"
    wrong_device.write_text(
        "checks:\n  - client -> host1: reachable via eth0\n  - client -> host1: route via eth0\n"
    )
    assert lab.run("check", str(wrong_device)).returncode == 2
    lab.ok("down")
    assert "no lab is up" in lab.run("inspect").stderr
    assert shutil.which(VPNLAB)
