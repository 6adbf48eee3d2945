"""`vpnlab`'s parts that need no lab: impairment and check-file parsing, graphs, completion,
--help, the JUnit report, and the CI files' syntax (checked against vendored schemas, offline)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

import pytest

from lab import checks, impair
from lab.cli import parser
from lab.cli.capture import follow
from lab.cli.lifecycle import starts_vpn
from lab.graph import to_dot, to_mermaid
from lab.model import LabError, Topology
from lab.model.compose import default_files, load
from lab.model.records import REPO_ROOT
from scenarios.runner import Result, Step, write_junit

VPNLAB = str(Path(sys.executable).with_name("vpnlab"))
CHECK_JSONSCHEMA = str(Path(sys.executable).with_name("check-jsonschema"))


def topology(*extra: str) -> Topology:
    return load(default_files(REPO_ROOT, extra), {})


# -- impairment ------------------------------------------------------------------------------
def test_impairment_parses_units_and_refuses_nonsense() -> None:
    parsed = impair.parse({"rate": "10mbit", "loss": "2%", "delay": "50ms"})
    assert parsed == impair.Impairment(rate="10mbit", loss=2.0, delay="50ms")
    assert parsed.needs_netem and not impair.Impairment(rate="1mbit", loss=5).needs_netem
    for bad in ({"rate": "fast"}, {"loss": "120%"}, {"delay": "soon"}, {"speed": "1"}):
        with pytest.raises(LabError):
            impair.parse(bad)


def test_loss_rules_drop_each_way_with_the_probability_asked() -> None:
    rules = impair.loss_rules("eth0", 2.0)
    assert {r[0] for r in rules} == {"INPUT", "OUTPUT", "FORWARD"} and len(rules) == 4
    assert all(r[r.index("--probability") + 1] == "0.02" for r in rules)
    assert all(impair.RULE_COMMENT in r for r in rules)


def test_netem_argv_carries_every_setting() -> None:
    argv = impair.netem_argv("eth1", impair.parse({"delay": "40ms", "jitter": "5ms", "corrupt": 1}))
    assert argv[-6:] == ["netem", "delay", "40ms", "5ms", "corrupt", "1%"]


def test_impairment_is_declared_in_the_compose_files() -> None:
    assert impair.declared(topology()) == {}
    declared = impair.declared(topology("slow-link"))
    assert declared == {"client:internet": impair.Impairment(rate="8mbit", loss=1.0)}


def test_an_impairment_on_a_network_the_node_lacks_is_an_error() -> None:
    lab = topology()
    lab.nodes["client"].labels["vpnlab.impair.lan"] = "rate=1mbit"
    with pytest.raises(LabError, match="not on network 'lan'"):
        impair.declared(lab)


def test_the_compose_files_can_ask_for_the_vpn_at_up() -> None:
    assert not starts_vpn(topology())
    assert starts_vpn(topology("vpn-up"))


# -- check files -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "value", "kind", "via"),
    [
        ("client -> host1", "reachable via tun0", "reachable", "tun0"),
        ("client -> host1", "unreachable", "unreachable", ""),
        ("client->gateway", "route via eth0", "route", "eth0"),
        ("segment internet", "only tls while client -> host1", "only-tls", ""),
        ("gateway", "port 4433 open", "port-open", ""),
        ("gateway", "port 53/udp closed", "port-closed", ""),
    ],
)
def test_check_lines_parse(key: str, value: str, kind: str, via: str) -> None:
    expectation = checks.parse_line(key, value)
    assert (expectation.kind, expectation.via) == (kind, via)


def test_an_unreadable_check_says_what_is_allowed() -> None:
    with pytest.raises(LabError, match="reachable"):
        checks.parse_line("client -> host1", "pingable")


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "checks").glob("*.yml")), ids=lambda p: p.name)
def test_shipped_check_files_parse_and_name_real_nodes(path: Path) -> None:
    spec = checks.load(path)
    nodes = set(topology().nodes)
    assert spec.expectations
    for e in spec.expectations:
        assert {e.source, e.target} - {""} <= nodes, e


# -- graph, help, completion -----------------------------------------------------------------
@pytest.mark.parametrize("render", [to_dot, to_mermaid])
def test_graphs_show_every_node_and_address(render: Callable[[Topology], str]) -> None:
    lab = topology("clients")
    text = render(lab)
    for node in lab.nodes.values():
        assert node.name in text
        for attachment in node.attachments:
            assert str(attachment.address) in text
    for network in lab.networks.values():
        assert str(network.subnet) in text


@pytest.mark.parametrize("render", [to_dot, to_mermaid])
def test_graphs_show_both_families(render: Callable[[Topology], str]) -> None:
    lab = topology("clients")
    text = render(lab)
    for node in lab.nodes.values():
        for attachment in node.attachments:
            assert attachment.address6 is not None
            assert str(attachment.address6) in text
    for network in lab.networks.values():
        assert f"{network.subnet}" in text and f"{network.subnet6}" in text
    gateway_lan = lab.node("gateway").attachment("lan")
    if render is to_dot:
        assert f'net_lan [label="{gateway_lan.address}\\n{gateway_lan.address6}"]' in text
    else:
        assert f'---|"{gateway_lan.address} {gateway_lan.address6}"| net_lan' in text


def test_graph_svg_is_drawn_without_a_lab(tmp_path: Path) -> None:
    out = tmp_path / "lab.svg"
    done = subprocess.run([VPNLAB, "graph", "--format", "svg", "-o", str(out)], capture_output=True)
    assert done.returncode == 0, done.stderr
    assert out.read_text().lstrip().startswith(("<?xml", "<svg"))


def test_every_verb_has_help_with_examples() -> None:
    verbs = parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name, sub in verbs.items():
        if not name.startswith("_"):
            assert "examples:" in sub.format_help(), name


def complete(line: str) -> list[str]:
    words = line.split(" ")
    script = (
        f'eval "$({VPNLAB} completion bash)"; vpnlab() {{ {VPNLAB} "$@"; }}; '
        f"COMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}; "
        '_vpnlab; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    return done.stdout.split()


def test_bash_completion_offers_verbs_options_and_links() -> None:
    assert complete("vpnlab in") == ["inspect"]
    assert "--rate" in complete("vpnlab impair --r")
    assert "client:internet" in complete("vpnlab impair cl")
    assert set(complete("vpnlab link client:internet ")) >= {"down", "up", "flap"}


# -- capture, JUnit, CI files ----------------------------------------------------------------
def test_follow_copies_what_is_appended_while_it_runs(tmp_path: Path) -> None:
    source = tmp_path / "growing.pcap"
    source.write_bytes(b"head")

    def grow() -> None:
        time.sleep(0.2)
        with source.open("ab") as fh:
            fh.write(b"-tail")

    writer = threading.Thread(target=grow)
    writer.start()
    sink = BytesIO()
    follow(source, sink, until=time.monotonic() + 0.6)
    writer.join()
    assert sink.getvalue() == b"head-tail"


def test_junit_report_marks_failures_and_skips(tmp_path: Path) -> None:
    results = [
        Result("basic", "netns", True, [Step("ping", True, "3/3")], seconds=1.0),
        Result("mtu", "netns", False, [Step("df ping", False, "too long")], seconds=2.0),
        Result("tap", "docker", True, skipped="no tap"),
    ]
    path = tmp_path / "junit.xml"
    write_junit(results, path)
    suites = ET.parse(path).getroot()
    netns, docker = suites.findall("testsuite")
    assert (netns.get("tests"), netns.get("failures"), docker.get("skipped")) == ("2", "1", "1")
    failure = netns.find("testcase[@name='mtu']/failure")
    assert failure is not None and "df ping: too long" in (failure.get("message") or "")
    assert netns.find("testcase[@name='basic']/failure") is None


CI_FILES = [
    ("vendor.github-workflows", REPO_ROOT / ".github" / "workflows" / "ci.yml"),
    ("vendor.gitlab-ci", REPO_ROOT / "ci" / "gitlab-ci.yml"),
]


def schema_check(schema: str, path: Path) -> subprocess.CompletedProcess[str]:
    """check-jsonschema with its vendored schema: no network."""
    argv = [CHECK_JSONSCHEMA, "--builtin-schema", schema, str(path)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("schema", "path"), CI_FILES, ids=lambda x: getattr(x, "name", x))
def test_ci_files_follow_their_schema(schema: str, path: Path) -> None:
    done = schema_check(schema, path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_schema_check_rejects_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  test:\n    runs-on: ubuntu-latest\n    steps: run make\n")
    assert schema_check("vendor.github-workflows", broken).returncode != 0
