"""lab.model.compose: the compose files are read, merged and checked as compose would (no root)."""

from __future__ import annotations

import ipaddress
import textwrap
from pathlib import Path

import pytest

from lab.model import TopologyError
from lab.model.compose import default_files, load
from lab.model.interpolate import interpolate
from lab.model.topology import Attachment, Network, Node, Topology

REPO = Path(__file__).resolve().parents[2]
ENV = {"VPNLAB_WORKDIR": "/tmp/vpnlab-test"}


def ip(text: str) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(text)


def ip6(text: str) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address(text)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


BASE = """
    x-node: &node
      image: ${VPNLAB_IMAGE:-vpnlab/node:latest}
      cap_add: [NET_ADMIN]
      healthcheck:
        test: ["CMD", "true"]
    networks:
      internet:
        ipam: {config: [{subnet: 10.9.0.0/24}]}
      lan:
        internal: true
        ipam: {config: [{subnet: 192.168.60.0/24}]}
    services:
      client:
        <<: *node
        networks: {internet: {ipv4_address: 10.9.0.5}}
      gateway:
        <<: *node
        command: sleep infinity
        sysctls: [net.ipv4.ip_forward=1]
        networks:
          internet: {ipv4_address: 10.9.0.11}
          lan: {ipv4_address: 192.168.60.11}
"""


# -- the real compose files ---------------------------------------------------------------------
def test_lab_yml_declares_the_lab() -> None:
    topo = load(default_files(REPO), ENV)
    assert set(topo.nodes) == {"client", "gateway", "host1", "host2", "host3"}
    assert topo.network("internet").subnet == ipaddress.IPv4Network("10.9.0.0/24")
    assert topo.network("lan").subnet == ipaddress.IPv4Network("192.168.60.0/24")
    assert topo.network("lan").internal
    assert topo.node("client").address("internet") == ip("10.9.0.5")
    gateway = topo.node("gateway")
    assert gateway.networks == ("internet", "lan")
    assert gateway.address("internet") == ip("10.9.0.11")
    assert gateway.address("lan") == ip("192.168.60.11")
    assert gateway.sysctls == {
        "net.ipv4.ip_forward": "1",
        "net.ipv6.conf.all.forwarding": "1",
        "net.ipv6.conf.default.disable_ipv6": "0",  # IPv6 allowed on tun0, made later
    }
    for name, last in (("host1", 5), ("host2", 6), ("host3", 7)):
        host = topo.node(name)
        assert host.networks == ("lan",)
        assert host.address("lan") == ip(f"192.168.60.{last}")
        assert host.command[:2] == ("sh", "-c")
        assert "192.168.53.0/24 via 192.168.60.11" in host.command[2]
        assert "fd00:53::/64 via fd00:60::11" in host.command[2]
        assert host.healthcheck[:2] == ("/bin/sh", "-c")
        assert "fd00:53::/64" in host.healthcheck[2]
    assert "NET_ADMIN" in topo.node("client").cap_add
    assert any(d.startswith("/dev/net/tun") for d in topo.node("client").devices)
    assert [n.name for n in topo.nodes_on("internet")] == ["client", "gateway"]


def test_lab_yml_is_dual_stack() -> None:
    """Every network has an IPv6 subnet beside its IPv4 one, every node an address in it."""
    topo = load(default_files(REPO, ["clients", "site2"]), ENV)
    assert topo.network("internet").subnet6 == ipaddress.IPv6Network("fd00:9::/64")
    assert topo.network("lan").subnet6 == ipaddress.IPv6Network("fd00:60::/64")
    assert topo.network("site2").subnet6 == ipaddress.IPv6Network("fd00:50::/64")
    for network in topo.networks.values():
        assert network.dual_stack
        assert network.subnets == (network.subnet, network.subnet6)
    gateway = topo.node("gateway")
    assert gateway.address6("internet") == ip6("fd00:9::11")
    assert gateway.address6("lan") == ip6("fd00:60::11")
    assert topo.node("client").address6("internet") == ip6("fd00:9::5")
    assert [topo.node(h).address6("lan") for h in ("host1", "host2", "host3")] == [
        ip6("fd00:60::5"),
        ip6("fd00:60::6"),
        ip6("fd00:60::7"),
    ]
    for node in topo.nodes.values():
        for attachment in node.attachments:
            assert attachment.address6 is not None, (node.name, attachment.network)
            assert attachment.address6 in topo.network(attachment.network).subnet6  # type: ignore[operator]
            assert attachment.addresses == (attachment.address, attachment.address6)
    assert gateway.labels["vpnlab.vpn.pool6"] == "fd00:53::/64"
    assert topo.node("client-router").sysctls["net.ipv6.conf.all.forwarding"] == "1"


def test_clients_yml_adds_two_clients() -> None:
    topo = load(default_files(REPO, ["clients"]), ENV)
    assert topo.node("client2").address("internet") == ip("10.9.0.6")
    assert topo.node("client3").address("internet") == ip("10.9.0.7")
    assert len(topo.nodes) == 7
    assert topo.files[-1].endswith("compose/clients.yml")


def test_real_files_parse_without_the_workdir_variable() -> None:
    """The netns backend has no use for VPNLAB_WORKDIR; only strict loading insists on it."""
    files = default_files(REPO)
    assert load(files, {}).node("client").address("internet") == ip("10.9.0.5")
    with pytest.raises(TopologyError, match="VPNLAB_WORKDIR"):
        load(files, {}, strict=True)


def test_default_files_names_an_unknown_extra() -> None:
    with pytest.raises(TopologyError, match=r"nosuch.*available: .*clients"):
        default_files(REPO, ["nosuch"])
    assert default_files(REPO, ["clients.yml"])[1] == REPO / "compose" / "clients.yml"


# -- interpolation ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${A}", "a"),
        ("$A/x", "a/x"),
        ("${UNSET}", ""),
        ("${UNSET:-d}", "d"),
        ("${EMPTY:-d}", "d"),
        ("${EMPTY-d}", ""),
        ("${UNSET-d}", "d"),
        ("${A:-d}", "a"),
        ("${A:+alt}", "alt"),
        ("${UNSET:+alt}", ""),
        ("${UNSET:-${A}-x}", "a-x"),
        ("$$A costs $$5", "$A costs $5"),
        ("${A:?must}", "a"),
        ("${UNSET:?must be set}", ""),
    ],
)
def test_interpolate(text: str, expected: str) -> None:
    assert interpolate(text, {"A": "a", "EMPTY": ""}) == expected


def test_interpolate_strict_and_malformed() -> None:
    with pytest.raises(TopologyError, match="UNSET is unset: must be set"):
        interpolate("${UNSET:?must be set}", {}, strict=True)
    with pytest.raises(TopologyError, match="unclosed"):
        interpolate("${A", {})
    with pytest.raises(TopologyError, match="invalid"):
        interpolate("${A:%x}", {})


def test_interpolation_applies_to_values(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "lab.yml",
        BASE.replace("10.9.0.5}", "'${CLIENT_ADDR:-10.9.0.5}'}").replace(
            "sleep infinity", "sleep $${SECONDS:-1} ${NAP}"
        ),
    )
    topo = load([path], {"CLIENT_ADDR": "10.9.0.20", "NAP": "inf"})
    assert topo.node("client").address("internet") == ip("10.9.0.20")
    assert topo.node("gateway").command == ("sleep", "${SECONDS:-1}", "inf")


# -- forms and merging --------------------------------------------------------------------------
def test_forms_of_command_healthcheck_and_sysctls(tmp_path: Path) -> None:
    path = write(tmp_path, "lab.yml", BASE)
    topo = load([path], {})
    assert topo.node("gateway").command == ("sleep", "infinity")
    assert topo.node("gateway").sysctls == {"net.ipv4.ip_forward": "1"}
    assert topo.node("client").healthcheck == ("true",)
    assert topo.node("client").command == ()
    override = write(
        tmp_path,
        "more.yml",
        """
        services:
          client:
            command: ["sh", "-c", "echo 'a b' && sleep 1"]
            healthcheck: {test: "ip route | grep -q default"}
            sysctls: {net.ipv4.conf.all.rp_filter: 0}
          gateway:
            command: echo "two words" three
            healthcheck: {test: ["CMD-SHELL", "test -e /x"]}
        """,
    )
    topo = load([path, override], {})
    assert topo.node("client").command == ("sh", "-c", "echo 'a b' && sleep 1")
    assert topo.node("client").healthcheck == ("/bin/sh", "-c", "ip route | grep -q default")
    assert topo.node("client").sysctls == {"net.ipv4.conf.all.rp_filter": "0"}
    assert topo.node("gateway").command == ("echo", "two words", "three")
    assert topo.node("gateway").healthcheck == ("/bin/sh", "-c", "test -e /x")
    disabled = write(tmp_path, "off.yml", "services: {client: {healthcheck: {disable: true}}}")
    assert load([path, disabled], {}).node("client").healthcheck == ()


def test_later_files_add_and_override(tmp_path: Path) -> None:
    base = write(tmp_path, "lab.yml", BASE)
    extra = write(
        tmp_path,
        "extra.yml",
        """
        x-ignored: {anything: [1, 2]}
        networks:
          site2:
            ipam: {config: [{subnet: 172.30.0.0/24}]}
        services:
          gateway:
            cap_add: [SYS_ADMIN]
            sysctls: [net.ipv4.conf.all.rp_filter=2]
            networks:
              internet: {ipv4_address: 10.9.0.12}
              site2: {ipv4_address: 172.30.0.11}
          remote:
            networks: {site2: {ipv4_address: 172.30.0.5}}
        """,
    )
    topo = load([base, extra], {})
    gateway = topo.node("gateway")
    assert gateway.networks == ("internet", "lan", "site2")
    assert gateway.address("internet") == ip("10.9.0.12")
    assert gateway.address("lan") == ip("192.168.60.11")
    assert gateway.cap_add == ("NET_ADMIN", "SYS_ADMIN")
    assert gateway.sysctls == {"net.ipv4.ip_forward": "1", "net.ipv4.conf.all.rp_filter": "2"}
    assert gateway.command == ("sleep", "infinity")
    assert topo.node("remote").address("site2") == ip("172.30.0.5")
    assert list(topo.networks) == ["internet", "lan", "site2"]
    assert topo.files == (str(base), str(extra))


def test_profiles_leave_services_out(tmp_path: Path) -> None:
    base = write(tmp_path, "lab.yml", BASE)
    extra = write(
        tmp_path,
        "p.yml",
        "services: {tool: {profiles: [tools], networks: {lan: {ipv4_address: 192.168.60.9}}}}",
    )
    assert "tool" not in load([base, extra], {}).nodes
    assert "tool" in load([base, extra], {}, profiles=["tools"]).nodes
    assert "tool" in load([base, extra], {"COMPOSE_PROFILES": "x,tools"}).nodes


# -- validation ---------------------------------------------------------------------------------
def test_address_outside_subnet(tmp_path: Path) -> None:
    base = write(tmp_path, "lab.yml", BASE)
    bad = write(
        tmp_path, "bad.yml", "services: {client: {networks: {internet: {ipv4_address: 10.8.0.5}}}}"
    )
    with pytest.raises(TopologyError) as err:
        load([base, bad], {})
    message = str(err.value)
    assert str(bad) in message and "'client'" in message
    assert "10.8.0.5" in message and "outside its subnet 10.9.0.0/24" in message


def test_two_nodes_with_one_address(tmp_path: Path) -> None:
    base = write(tmp_path, "lab.yml", BASE)
    bad = write(
        tmp_path,
        "clients.yml",
        "services: {client2: {networks: {internet: {ipv4_address: 10.9.0.5}}}}",
    )
    with pytest.raises(TopologyError) as err:
        load([base, bad], {})
    message = str(err.value)
    assert str(bad) in message and "'client2'" in message
    assert "10.9.0.5 is already taken by service 'client'" in message and str(base) in message


def test_undeclared_network(tmp_path: Path) -> None:
    bad = write(
        tmp_path,
        "lab.yml",
        BASE + "      ghost:\n        networks: {dmz: {ipv4_address: 10.1.0.5}}\n",
    )
    with pytest.raises(TopologyError, match=r"lab\.yml: service 'ghost' joins network 'dmz'"):
        load([bad], {})


def test_network_without_subnet(tmp_path: Path) -> None:
    bad = write(tmp_path, "lab.yml", BASE.replace("ipam: {config: [{subnet: 10.9.0.0/24}]}", "{}"))
    with pytest.raises(TopologyError, match=r"lab\.yml: network 'internet' has no subnet"):
        load([bad], {})
    bare = write(tmp_path, "bare.yml", "networks: {dmz:}")
    with pytest.raises(TopologyError, match=r"bare\.yml: network 'dmz' has no subnet"):
        load([write(tmp_path, "lab2.yml", BASE), bare], {})


@pytest.mark.parametrize(
    ("snippet", "match"),
    [
        ("services: {x: {image: busybox}}", "service 'x' joins no network"),
        ("services: {x: {networks: [lan]}}", "service 'x': no ipv4_address on network 'lan'"),
        (
            "services: {x: {networks: {lan: {ipv4_address: 192.168.60.11}}}}",
            "already taken by service 'gateway'",
        ),
        (
            "services: {x: {networks: {lan: {ipv4_address: 192.168.60.1}}}}",
            "192.168.60.1 on network 'lan' is reserved",
        ),
        (  # the network's own address and its broadcast address are never handed out
            "services: {x: {networks: {lan: {ipv4_address: 192.168.60.0}}}}",
            "192.168.60.0 on network 'lan' is reserved",
        ),
        (
            "services: {x: {networks: {lan: {ipv4_address: 192.168.60.255}}}}",
            "192.168.60.255 on network 'lan' is reserved",
        ),
        (
            "services: {x: {networks: {lan: {ipv4_address: nonsense}}}}",
            "'nonsense' on network 'lan' is not an IPv4 address",
        ),
        ("services: {x: {network_mode: host}}", "network_mode is not supported"),
        ("networks: {dmz: {ipam: {config: [{subnet: 10.9.0.128/25}]}}}", "overlaps network"),
        ("networks: {dmz: {ipam: {config: [{subnet: 10.7.0.1/24}]}}}", "invalid subnet"),
        ("services: {x: {command: 5, networks: {lan: {ipv4_address: 192.168.60.9}}}}", "command"),
        (
            "services: {x: {healthcheck: {test: [BOGUS]}, networks: {lan: {ipv4_address: "
            "192.168.60.9}}}}",
            "healthcheck test",
        ),
        ("servces: {}", "unknown top-level key 'servces'"),
        ("services: [a, b]", "services: must be a mapping"),
        ("a: [", "not valid YAML"),
    ],
)
def test_errors_name_the_file(tmp_path: Path, snippet: str, match: str) -> None:
    base = write(tmp_path, "lab.yml", BASE)
    bad = write(tmp_path, "bad.yml", snippet + "\n")
    with pytest.raises(TopologyError, match=match) as err:
        load([base, bad], {})
    assert str(bad) in str(err.value) or str(base) in str(err.value)


def test_missing_file_and_no_file(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="no such compose file"):
        load([tmp_path / "absent.yml"], {})
    with pytest.raises(TopologyError, match="no compose file given"):
        load([], {})


def test_lookups_that_miss_say_what_there_is() -> None:
    a = Attachment(network="lan", address=ipaddress.IPv4Address("192.168.60.5"))
    b = Attachment(network="internet", address=ipaddress.IPv4Address("10.9.0.5"))
    node = Node(name="host1", attachments=(a, b))
    net = Network(name="lan", subnet=ipaddress.IPv4Network("192.168.60.0/24"))
    topo = Topology(networks={"lan": net}, nodes={"host1": node}, files=("a.yml", "b.yml"))
    assert node.address("internet") == b.address and node.networks == ("lan", "internet")
    assert topo.nodes_on("lan") == [node] and topo.nodes_on("dmz") == []
    with pytest.raises(KeyError) as err:
        node.address("dmz")
    assert err.value.args == ("node 'host1' has no interface on network 'dmz'",)
    with pytest.raises(KeyError) as err:
        topo.node("ghost")
    assert err.value.args == ("no node 'ghost' in a.yml, b.yml; nodes: host1",)
    with pytest.raises(KeyError) as err:
        Topology(networks={}, nodes={"b": node, "a": node}).node("ghost")
    assert err.value.args == ("no node 'ghost' in the topology; nodes: a, b",)
    with pytest.raises(KeyError) as err:
        topo.network("dmz")
    assert err.value.args == ("no network 'dmz'; networks: lan",)


# -- IPv6 -----------------------------------------------------------------------------------------
DUAL = """
    networks:
      internet:
        enable_ipv6: true
        ipam: {config: [{subnet: 10.9.0.0/24}, {subnet: "fd00:9::/64"}]}
      lan:
        internal: true
        enable_ipv6: true
        ipam:
          config: [{subnet: 192.168.60.0/24}, {subnet: "fd00:60::/64", gateway: "fd00:60::fe"}]
    services:
      client:
        networks: {internet: {ipv4_address: 10.9.0.5, ipv6_address: "fd00:9::5"}}
      gateway:
        networks:
          internet: {ipv4_address: 10.9.0.11, ipv6_address: "fd00:9::11"}
          lan: {ipv4_address: 192.168.60.11, ipv6_address: "fd00:60::11"}
      host1:
        networks: {lan: {ipv4_address: 192.168.60.5}}
"""


def test_ipv6_subnets_and_addresses_are_read(tmp_path: Path) -> None:
    topo = load([write(tmp_path, "lab.yml", DUAL)], {})
    assert topo.network("internet").subnet6 == ipaddress.IPv6Network("fd00:9::/64")
    assert topo.network("lan").subnets == (
        ipaddress.IPv4Network("192.168.60.0/24"),
        ipaddress.IPv6Network("fd00:60::/64"),
    )
    gateway = topo.node("gateway")
    assert gateway.address("lan") == ip("192.168.60.11")  # the IPv4 API as it was
    assert gateway.address6("lan") == ip6("fd00:60::11")
    assert gateway.attachment("internet") == Attachment(
        network="internet", address=ip("10.9.0.11"), address6=ip6("fd00:9::11")
    )
    # ipv6_address is optional: an attachment without one has the IPv4 address only.
    host1 = topo.node("host1").attachment("lan")
    assert host1.address6 is None and host1.addresses == (ip("192.168.60.5"),)
    with pytest.raises(KeyError, match="node 'host1' has no IPv6 address on network 'lan'"):
        topo.node("host1").address6("lan")
    with pytest.raises(KeyError, match="no interface on network 'internet'"):
        topo.node("host1").address6("internet")


def test_ipv4_only_networks_stay_ipv4_only(tmp_path: Path) -> None:
    topo = load([write(tmp_path, "lab.yml", BASE)], {})
    for network in topo.networks.values():
        assert network.subnet6 is None and not network.dual_stack
        assert network.subnets == (network.subnet,)
    assert all(a.address6 is None for n in topo.nodes.values() for a in n.attachments)


@pytest.mark.parametrize(
    ("snippet", "match"),
    [
        (  # not an address at all
            "services: {host1: {networks: {lan: {ipv6_address: nonsense}}}}",
            "service 'host1': ipv6_address 'nonsense' on network 'lan' is not an IPv6 address",
        ),
        (  # an IPv4 address where an IPv6 one belongs
            "services: {host1: {networks: {lan: {ipv6_address: 192.168.60.9}}}}",
            "'192.168.60.9' on network 'lan' is not an IPv6 address",
        ),
        (
            'services: {host1: {networks: {lan: {ipv6_address: "fd00:61::5"}}}}',
            "service 'host1': address fd00:61::5 on network 'lan' is outside its IPv6 subnet "
            "fd00:60::/64",
        ),
        (  # taken by another node
            'services: {host1: {networks: {lan: {ipv6_address: "fd00:60::11"}}}}',
            "service 'host1': address fd00:60::11 is already taken by service 'gateway'",
        ),
        (  # the same address written another way is the same address
            'services: {host1: {networks: {lan: {ipv6_address: "fd00:60:0:0::11"}}}}',
            "address fd00:60::11 is already taken by service 'gateway'",
        ),
        (  # Docker's gateway, as the ipam config sets it
            'services: {host1: {networks: {lan: {ipv6_address: "fd00:60::fe"}}}}',
            r"fd00:60::fe on network 'lan' is reserved \(.*gateway fd00:60::fe\)",
        ),
        (  # Docker's default gateway: the subnet's first address
            'services: {client: {networks: {internet: {ipv6_address: "fd00:9::1"}}}}',
            "fd00:9::1 on network 'internet' is reserved",
        ),
        (  # the subnet-router anycast address
            'services: {client: {networks: {internet: {ipv6_address: "fd00:9::"}}}}',
            "fd00:9:: on network 'internet' is reserved",
        ),
        (
            'networks: {dmz: {ipam: {config: [{subnet: 10.7.0.0/24}, {subnet: "fd00:7::/64"}]}}}',
            "network 'dmz' has the IPv6 subnet fd00:7::/64 but not enable_ipv6: true",
        ),
        (
            "networks: {dmz: {enable_ipv6: true, ipam: {config: [{subnet: 10.7.0.0/24}]}}}",
            "network 'dmz' has enable_ipv6 but no IPv6 subnet",
        ),
        (
            "networks: {dmz: {enable_ipv6: maybe, ipam: {config: [{subnet: 10.7.0.0/24}]}}}",
            "network 'dmz': enable_ipv6 must be true or false",
        ),
        (
            "networks: {dmz: {enable_ipv6: true, ipam: {config: [{subnet: 10.7.0.0/24}, "
            '{subnet: "fd00:7::/64"}, {subnet: "fd00:8::/64"}]}}}',
            "network 'dmz' has 2 IPv6 subnets",
        ),
        (
            "networks: {dmz: {enable_ipv6: true, ipam: {config: [{subnet: 10.7.0.0/24}, "
            '{subnet: "fd00:7::1/64"}]}}}',
            "network 'dmz': invalid IPv6 subnet 'fd00:7::1/64'",
        ),
        (
            "networks: {dmz: {enable_ipv6: true, ipam: {config: [{subnet: 10.7.0.0/24}, "
            '{subnet: "fd00:60:0:0:8000::/65"}]}}}',
            r"network 'dmz' \(fd00:60:0:0:8000::/65\) overlaps network 'lan' \(fd00:60::/64\)",
        ),
        (
            "networks: {dmz: {enable_ipv6: true, ipam: {config: [{subnet: 10.7.0.0/24}, "
            '{subnet: "fd00:7::/64", gateway: 10.7.0.1}]}}}',
            "the gateway of fd00:7::/64 must be an IPv6 address",
        ),
        (  # an IPv6 address on a network that has no IPv6 subnet
            "networks: {dmz: {ipam: {config: [{subnet: 10.7.0.0/24}]}}}\n"
            "services: {host1: {networks: {dmz: "
            '{ipv4_address: 10.7.0.5, ipv6_address: "fd00::5"}}}}',
            "service 'host1': ipv6_address fd00::5 on network 'dmz', which has no IPv6 subnet",
        ),
    ],
)
def test_ipv6_errors_name_the_file_and_service(tmp_path: Path, snippet: str, match: str) -> None:
    base = write(tmp_path, "lab.yml", DUAL)
    bad = write(tmp_path, "bad.yml", snippet + "\n")
    with pytest.raises(TopologyError, match=match) as err:
        load([base, bad], {})
    assert str(bad) in str(err.value)


def test_an_ipv6_duplicate_names_both_files(tmp_path: Path) -> None:
    base = write(tmp_path, "lab.yml", DUAL)
    bad = write(
        tmp_path,
        "clients.yml",
        "services: {client2: {networks: {internet: "
        '{ipv4_address: 10.9.0.6, ipv6_address: "fd00:9::5"}}}}',
    )
    with pytest.raises(TopologyError) as err:
        load([base, bad], {})
    message = str(err.value)
    assert str(bad) in message and "'client2'" in message
    assert f"fd00:9::5 is already taken by service 'client' ({base})" in message
