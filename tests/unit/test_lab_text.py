"""Exact output of the lab's small readers and writers that need no lab: the dot and Mermaid
graphs, the check-file parser and the pcap reader."""

from __future__ import annotations

import ipaddress
import struct
from pathlib import Path

import pytest

from lab import checks, pcap
from lab.graph import to_dot, to_mermaid
from lab.model import LabError, Topology
from lab.model.topology import Attachment, Network, Node


def small_lab() -> Topology:
    net = ipaddress.IPv4Network
    addr = ipaddress.IPv4Address
    gateway = Node(
        "gw.1",
        (Attachment("lan-a", addr("10.1.0.1")), Attachment("wan", addr("192.0.2.1"))),
        labels={"vpnlab.role": "gateway"},
    )
    host = Node("host", (Attachment("wan", addr("192.0.2.9")),), labels={"other": "x"})
    return Topology(
        {"lan-a": Network("lan-a", net("10.1.0.0/24")), "wan": Network("wan", net("192.0.2.0/24"))},
        {"gw.1": gateway, "host": host},
    )


# -- graphs ---------------------------------------------------------------------------------


def test_dot_graph_is_exact() -> None:
    assert to_dot(small_lab()) == (
        "graph vpnlab {\n"
        "  graph [rankdir=LR];\n"
        "  node [fontname=Helvetica];\n"
        '  net_lan_a [shape=ellipse, label="lan-a\\n10.1.0.0/24"];\n'
        '  net_wan [shape=ellipse, label="wan\\n192.0.2.0/24"];\n'
        '  node_gw_1 [shape=box, label="gw.1\\n(gateway)"];\n'
        '  node_gw_1 -- net_lan_a [label="10.1.0.1"];\n'
        '  node_gw_1 -- net_wan [label="192.0.2.1"];\n'
        '  node_host [shape=box, label="host"];\n'
        '  node_host -- net_wan [label="192.0.2.9"];\n'
        "}\n"
    )


def test_mermaid_graph_is_exact() -> None:
    assert to_mermaid(small_lab()) == (
        "graph LR\n"
        '  net_lan_a(["lan-a 10.1.0.0/24"])\n'
        '  net_wan(["wan 192.0.2.0/24"])\n'
        '  node_gw_1["gw.1 (gateway)"]\n'
        '  node_gw_1 ---|"10.1.0.1"| net_lan_a\n'
        '  node_gw_1 ---|"192.0.2.1"| net_wan\n'
        '  node_host["host"]\n'
        '  node_host ---|"192.0.2.9"| net_wan\n'
    )


# -- check files ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        (
            " client  ->  host1 ",
            "  reachable   via  tun0 ",
            checks.Expectation(
                " client  ->  host1 :   reachable   via  tun0 ",
                "reachable",
                "client",
                "host1",
                via="tun0",
            ),
        ),
        (
            "client -> host1",
            "reachable",
            checks.Expectation("client -> host1: reachable", "reachable", "client", "host1"),
        ),
        (
            "client->10.0.0.1",
            "unreachable",
            checks.Expectation(
                "client->10.0.0.1: unreachable", "unreachable", "client", "10.0.0.1"
            ),
        ),
        (
            "client -> gateway",
            "route via eth0",
            checks.Expectation(
                "client -> gateway: route via eth0", "route", "client", "gateway", via="eth0"
            ),
        ),
        (
            "segment  internet ",
            "only tls while client->host1",
            checks.Expectation(
                "segment  internet : only tls while client->host1",
                "only-tls",
                "client",
                "host1",
                segment="internet",
            ),
        ),
        (
            " gateway ",
            "port 4433 open",
            checks.Expectation(
                " gateway : port 4433 open", "port-open", source="gateway", port=4433
            ),
        ),
        (
            "gateway",
            "port 53/udp closed",
            checks.Expectation(
                "gateway: port 53/udp closed",
                "port-closed",
                source="gateway",
                port=53,
                protocol="udp",
            ),
        ),
        (
            "gateway",
            "port 22/tcp closed",
            checks.Expectation(
                "gateway: port 22/tcp closed", "port-closed", source="gateway", port=22
            ),
        ),
    ],
)
def test_each_kind_of_check_line_parses_to_every_field(
    key: str, value: str, expected: checks.Expectation
) -> None:
    assert checks.parse_line(key, value) == expected


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("client -> host1", "pingable"),
        ("client -> host1", "reachable via"),
        ("client -> host1", "port 22 open"),
        ("client -> host1", "route"),
        ("client -> host1 -> x", "reachable"),
        ("segment internet", "reachable"),
        ("segment internet", "only tls while client"),
        ("gateway", "port x open"),
        ("gateway", "port 22/sctp open"),
        ("gateway", "port 22 ajar"),
        ("gateway", "reachable"),
        ("net internet", "only tls while a -> b"),
    ],
)
def test_a_check_line_of_no_known_form_is_refused_with_the_forms(key: str, value: str) -> None:
    with pytest.raises(LabError) as info:
        checks.parse_line(key, value)
    assert str(info.value) == (
        f"cannot read the check {f'{key}: {value}'!r}: write `A -> B: reachable [via IF]`, "
        "`A -> B: unreachable`, `A -> B: route via IF`, `segment NET: only tls while A -> B` or "
        "`NODE: port N[/tcp|udp] open|closed`"
    )


def test_a_check_file_parses_in_order_and_is_named(tmp_path: Path) -> None:
    path = tmp_path / "tunnel.yml"
    path.write_text(
        "name: through the tunnel\nchecks:\n"
        "  - client -> gateway: reachable\n  - gateway: port 4433 open\n"
    )
    spec = checks.load(path)
    assert spec == checks.CheckFile(
        "through the tunnel",
        path,
        (
            checks.Expectation("client -> gateway: reachable", "reachable", "client", "gateway"),
            checks.Expectation("gateway: port 4433 open", "port-open", source="gateway", port=4433),
        ),
    )
    path.write_text("checks:\n  - client -> gateway: unreachable\n")
    assert checks.load(path).name == "tunnel"
    path.write_text("name: ''\nchecks: []\n")
    assert checks.load(path) == checks.CheckFile("tunnel", path, ())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a\n", "{path}: expected a mapping with a `checks:` list"),
        ("checks: {a: b}\n", "{path}: expected a mapping with a `checks:` list"),
        ("name: x\n", "{path}: expected a mapping with a `checks:` list"),
        (
            "checks:\n  - just text\n",
            "{path}: each check is one `KEY: VALUE` line, not 'just text'",
        ),
        (
            "checks:\n  - {a -> b: reachable, c -> d: reachable}\n",
            "{path}: each check is one `KEY: VALUE` line, not "
            "{{'a -> b': 'reachable', 'c -> d': 'reachable'}}",
        ),
        ("checks:\n  - {}\n", "{path}: each check is one `KEY: VALUE` line, not {{}}"),
    ],
)
def test_a_malformed_check_file_is_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yml"
    path.write_text(text)
    with pytest.raises(LabError) as info:
        checks.load(path)
    assert str(info.value) == message.format(path=path)


def test_a_bad_line_or_unreadable_file_is_named_with_the_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.yml"
    path.write_text("checks:\n  - client -> gateway: reachable\n  - gateway: port 22 ajar\n")
    with pytest.raises(LabError) as info:
        checks.load(path)
    assert str(info.value).startswith(f"{path}: cannot read the check 'gateway: port 22 ajar': ")
    path.write_text("checks: [\n")
    with pytest.raises(LabError) as info:
        checks.load(path)
    assert str(info.value).startswith(f"{path}: while parsing")
    with pytest.raises(LabError) as info:
        checks.load(tmp_path / "none.yml")
    assert str(info.value).startswith(f"{tmp_path / 'none.yml'}: [Errno 2] No such file")


# -- pcap -----------------------------------------------------------------------------------


def pcap_bytes(order: str, magic: int, link: int, frames: list[bytes]) -> bytes:
    head = struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, link)
    body = b"".join(struct.pack(order + "IIII", 1, 2, len(f), len(f) + 10) + f for f in frames)
    return head + body


@pytest.mark.parametrize(
    ("order", "magic"),
    [("<", 0xA1B2C3D4), (">", 0xA1B2C3D4), ("<", 0xA1B23C4D), (">", 0xA1B23C4D)],
    ids=["little-us", "big-us", "little-ns", "big-ns"],
)
def test_pcap_records_in_either_byte_order(tmp_path: Path, order: str, magic: int) -> None:
    path = tmp_path / "c.pcap"
    frames = [b"\x01" * 14, b"", b"abc" * 40]
    path.write_bytes(pcap_bytes(order, magic, 113, frames))
    assert pcap.link_type(path) == 113
    assert list(pcap.records(path)) == frames
    assert pcap.count_packets(path) == 3


def test_pcap_a_truncated_file_yields_what_it_has(tmp_path: Path) -> None:
    path = tmp_path / "c.pcap"
    whole = pcap_bytes("<", 0xA1B2C3D4, 1, [b"first-frame", b"second-frame"])
    path.write_bytes(whole[:-4])
    assert list(pcap.records(path)) == [b"first-frame", b"second-f"]
    path.write_bytes(whole[: pcap.HEADER + 16 + 11 + 15])  # the second record's header is cut
    assert list(pcap.records(path)) == [b"first-frame"]
    path.write_bytes(whole[: pcap.HEADER + 16])
    assert list(pcap.records(path)) == [b""]
    path.write_bytes(whole[: pcap.HEADER])
    assert list(pcap.records(path)) == [] and pcap.link_type(path) == 1
    path.write_bytes(whole[: pcap.HEADER - 1])
    assert list(pcap.records(path)) == [] and pcap.link_type(path) is None
    assert pcap.count_packets(path) == 0


def test_pcap_lengths_and_link_types_are_unsigned(tmp_path: Path) -> None:
    path = tmp_path / "c.pcap"
    head = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 0xFFFFFFF0)
    path.write_bytes(head + struct.pack("<IIII", 1, 2, 0xFFFFFFFF, 0xFFFFFFFF) + b"tail")
    assert pcap.link_type(path) == 0xFFFFFFF0
    assert list(pcap.records(path)) == [b"tail"], "a length past the end: the rest, once"
