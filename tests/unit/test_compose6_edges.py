"""The compose reader's network checks, IPv6 ones first, each message in full: enable_ipv6 and
its string forms, the IPv6 subnet rules, configured gateways, overlaps across files."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from lab.model import TopologyError
from lab.model.compose import _flag, load


def read(tmp_path: Path, text: str) -> object:
    path = tmp_path / "lab.yml"
    path.write_text(text)
    return load([path], {})


def refusal(tmp_path: Path, text: str) -> str:
    path = tmp_path / "lab.yml"
    path.write_text(text)
    with pytest.raises(TopologyError) as info:
        load([path], {})
    message = str(info.value)
    prefix = f"{path}: "
    assert message.startswith(prefix)
    return message[len(prefix) :]


FLAGS = [(True, True), (False, False), ("true", True), ("True", True), ("TRUE", True)]
FLAGS += [("1", True), ("false", False), ("FALSE", False), ("0", False), ("", False)]


@pytest.mark.parametrize(("value", "expected"), FLAGS)
def test_flag_takes_yaml_booleans_and_their_strings(value: object, expected: bool) -> None:
    assert _flag(value, "enable_ipv6", "here") is expected


@pytest.mark.parametrize("value", ["yes", "2", 1, None])
def test_flag_refuses_anything_else(value: object) -> None:
    with pytest.raises(TopologyError) as info:
        _flag(value, "enable_ipv6", "here")
    assert str(info.value) == f"here: enable_ipv6 must be true or false, got {value!r}"


V4 = "{subnet: 10.7.0.0/24}"


@pytest.mark.parametrize(
    ("networks", "message"),
    [
        (
            f"{{dmz: {{enable_ipv6: true, ipam: {{config: [{V4}]}}}}}}",
            "network 'dmz' has enable_ipv6 but no IPv6 subnet: add one beside the IPv4 one in "
            "ipam: config: (e.g. {subnet: fd00:1::/64}; the lab's addresses are static)",
        ),
        (
            f'{{dmz: {{enable_ipv6: true, ipam: {{config: [{V4}, {{subnet: "fd00:7::/64"}}, '
            '{subnet: "fd00:8::/64"}]}}}',
            "network 'dmz' has 2 IPv6 subnets (fd00:7::/64, fd00:8::/64); "
            "the lab takes one per network",
        ),
        (
            f'{{dmz: {{enable_ipv6: "false", ipam: {{config: [{V4}, '
            '{subnet: "fd00:7::/64"}]}}}',
            "network 'dmz' has the IPv6 subnet fd00:7::/64 but not enable_ipv6: true; "
            "add it (Docker ignores the subnet without it)",
        ),
        (
            f"{{dmz: {{enable_ipv6: true, ipam: {{config: [{V4}, "
            '{subnet: "fd00:7::/64", gateway: nonsense}]}}}',
            "network 'dmz': gateway 'nonsense' of fd00:7::/64 is not an address",
        ),
        (
            "{dmz: {ipam: {config: [{subnet: 10.7.0.0/24, gateway: nonsense}]}}}",
            "network 'dmz': gateway 'nonsense' of 10.7.0.0/24 is not an address",
        ),
        (
            '{dmz: {ipam: {config: [{subnet: 10.7.0.0/24, gateway: "fd00::1"}]}}}',
            "network 'dmz': the gateway of 10.7.0.0/24 must be an IPv4 address",
        ),
        ("{dmz: [a]}", "network 'dmz' must be a mapping"),
        (
            f"{{dmz: {{external: true, ipam: {{config: [{V4}]}}}}}}",
            "network 'dmz' is external: the lab creates its own networks",
        ),
        (
            "{dmz: {ipam: {config: [10.7.0.0/24]}}}",
            "network 'dmz' has no subnet: add ipam: {config: [{subnet: 10.x.y.0/24}]} "
            "(the lab's addresses are static)",
        ),
        (
            f'{{a: {{enable_ipv6: true, ipam: {{config: [{V4}, {{subnet: "fd00:7::/64"}}]}}}}, '
            "b: {enable_ipv6: true, ipam: {config: [{subnet: 10.8.0.0/24}, "
            '{subnet: "fd00:7::/64"}]}}}',
            "network 'b' (fd00:7::/64) overlaps network 'a' (fd00:7::/64); "
            "subnets must be disjoint",
        ),
    ],
)
def test_network_refusals_in_full(tmp_path: Path, networks: str, message: str) -> None:
    assert refusal(tmp_path, f"networks: {networks}\n") == message


def test_an_ipv6_address_needs_an_ipv6_subnet_in_full(tmp_path: Path) -> None:
    text = (
        f"networks: {{dmz: {{ipam: {{config: [{V4}]}}}}}}\n"
        'services: {h: {networks: {dmz: {ipv4_address: 10.7.0.5, ipv6_address: "fd00::5"}}}}\n'
    )
    assert refusal(tmp_path, text) == (
        "service 'h': ipv6_address fd00::5 on network 'dmz', which has no IPv6 subnet: give the "
        "network enable_ipv6: true and an IPv6 subnet"
    )


def test_the_ipv6_subnet_may_come_first_and_gateways_are_taken_from_ipam(tmp_path: Path) -> None:
    text = (
        "networks:\n"
        "  dmz:\n"
        "    enable_ipv6: 'True'\n"
        '    ipam: {config: [{subnet: "fd00:7::/64"},\n'
        "                    {subnet: 10.7.0.0/24, gateway: 10.7.0.254}]}\n"
        "services:\n"
        "  h: {networks: {dmz: {ipv4_address: 10.7.0.1}}}\n"
    )
    topo = read(tmp_path, text)
    network = topo.network("dmz")  # type: ignore[attr-defined]
    assert network.subnet == ipaddress.IPv4Network("10.7.0.0/24")
    assert network.subnet6 == ipaddress.IPv6Network("fd00:7::/64")
    assert network.internal is False, "a network is not internal unless it says so"
    assert topo.node("h").address("dmz") == ipaddress.IPv4Address("10.7.0.1")  # type: ignore[attr-defined]
    taken = text.replace("10.7.0.1}", "10.7.0.254}")
    assert refusal(tmp_path, taken) == (
        "service 'h': address 10.7.0.254 on network 'dmz' is reserved (network, broadcast or "
        "Docker's gateway 10.7.0.254); pick another"
    )
