"""IPv6 on the wire and in the settings (pure): CONFIG's address6/server_address6/routes6, HELLO's
address6, their hostile values, --pool6 / --route / --client-subnet / --mtu checks, IPv6
endpoints, and the ICMPv6/UDP checksum over the pseudo-header."""

from __future__ import annotations

import ipaddress
import json
import struct

import pytest

from vpn import config, packets, protocol
from vpn.errors import ConfigError, ProtocolError

BASE = {
    "address": "192.168.53.9/24",
    "server_address": "192.168.53.1",
    "mtu": 1400,
    "routes": [],
    "keepalive": 10,
    "dead_peer": 30,
}
V6 = {"address6": "fd00:53::9/64", "server_address6": "fd00:53::1", "routes6": ["fd00:202::/64"]}


def config6(**change: object) -> protocol.Config:
    fields: dict[str, object] = {
        "address": ipaddress.IPv4Interface("192.168.53.9/24"),
        "server_address": ipaddress.IPv4Address("192.168.53.1"),
        "mtu": 1400,
        "routes": (ipaddress.IPv4Network("192.168.60.0/24"),),
        "keepalive": 10.0,
        "dead_peer": 30.0,
        "address6": ipaddress.IPv6Interface("fd00:53::9/64"),
        "server_address6": ipaddress.IPv6Address("fd00:53::1"),
        "routes6": (ipaddress.IPv6Network("fd00:202::/64"), ipaddress.IPv6Network("::/0")),
    }
    fields.update(change)
    return protocol.Config(**fields)  # type: ignore[arg-type]


def decoded(message: dict[str, object]) -> protocol.Config:
    return protocol.decode_config(json.dumps(message).encode())


def test_config_with_ipv6_round_trips_and_names_its_fields() -> None:
    sent = config6()
    wire = json.loads(bytes(sent.encode()[4:]))
    assert wire["address6"] == "fd00:53::9/64" and wire["server_address6"] == "fd00:53::1"
    assert wire["routes6"] == ["fd00:202::/64", "::/0"]
    assert wire["routes"] == ["192.168.60.0/24"], "IPv4 routes stay in their own list"
    assert protocol.decode_config(sent.encode()[4:]) == sent


def test_config_without_ipv6_carries_no_ipv6_keys() -> None:
    sent = config6(address6=None, server_address6=None, routes6=())
    wire = json.loads(bytes(sent.encode()[4:]))
    assert not {"address6", "server_address6", "routes6"} & set(wire)
    assert protocol.decode_config(sent.encode()[4:]).address6 is None


def test_a_changed_ipv6_address_is_not_a_live_update() -> None:
    old = config6()
    assert old.same_link(config6(routes6=()))
    assert not old.same_link(config6(address6=ipaddress.IPv6Interface("fd00:53::a/64")))
    assert not old.same_link(config6(address6=None, server_address6=None))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"address6": "fd00:53::9"}, "prefix length"),
        ({"address6": "fe80::9/64"}, "not a unicast"),
        ({"address6": "ff02::1/64"}, "not a unicast"),
        ({"address6": "::1/128"}, "not a unicast"),
        ({"address6": "::/64"}, "not a unicast"),
        ({"address6": "::ffff:10.0.0.1/120"}, "not a unicast"),
        ({"address6": "fd00:53::9/8"}, "shorter than"),
        ({"address6": "192.168.53.9/24"}, "address6"),
        ({"address6": ["fd00:53::9/64"]}, "address6"),
        ({"address6": "fd00::" + "1" * 300 + "/64"}, "address6"),
        ({"server_address6": "fe80::1"}, "not a unicast"),
        ({"server_address6": None}, "server_address6"),
        ({"routes6": ["fe80::/64"]}, "link-local"),
        ({"routes6": ["ff00::/8"]}, "multicast"),
        ({"routes6": ["::1/128"]}, "loopback"),
        ({"routes6": ["fd00:202::1/64"]}, "host bits set"),
        ({"routes6": ["10.0.0.0/8"]}, "routes6"),
        ({"routes6": "fd00::/64"}, "routes6"),
        ({"routes6": [f"fd00:{i:x}::/32" for i in range(65)]}, "at most 64"),
        ({"mtu": 1279}, "below 1280"),
    ],
)
def test_hostile_ipv6_configs_say_why(change: dict[str, object], reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        decoded({**BASE, **V6, **change})


def test_missing_server_address6_with_an_address6_is_an_error() -> None:
    message = {**BASE, **V6}
    del message["server_address6"]
    with pytest.raises(ProtocolError, match="server_address6"):
        decoded(message)


def test_a_low_mtu_is_fine_without_ipv6() -> None:
    assert decoded({**BASE, "mtu": 1000}).mtu == 1000


def test_hello_carries_the_previous_ipv6_address() -> None:
    hello = protocol.Hello(version=1, name="c", address="10.0.0.2", address6="fd00:53::7")
    assert protocol.decode_hello(hello.encode()[4:]) == hello
    for bad in ("fe80::1", "nonsense", "10.0.0.1"):
        message = {"version": 1, "name": "c", "address6": bad}
        with pytest.raises(ProtocolError, match="address6"):
            protocol.decode_hello(json.dumps(message).encode())


# -- settings ----------------------------------------------------------------------------------


def server(**change: object) -> config.ServerConfig:
    settings = config.ServerConfig(pool6="fd00:53::/64")
    for key, value in change.items():
        setattr(settings, key, value)
    return settings


def test_pool6_settings() -> None:
    assert config.parse_pool6(config.ServerConfig()) is None, "no --pool6: no IPv6"
    assert config.parse_pool6(server()) == ipaddress.IPv6Network("fd00:53::/64")
    with pytest.raises(ConfigError, match="--mtu 1279 is below 1280"):
        config.parse_pool6(server(mtu=1279))
    for bad in ("fd00:53::1/64", "fe80::/64", "10.0.0.0/24", "fd00::/127", "::/0"):
        with pytest.raises(ConfigError, match="--pool6"):
            config.parse_pool6(server(pool6=bad))
    with pytest.raises(ConfigError, match="TAP"):
        config.parse_pool6(server(tap=True))


def test_route_takes_ipv4_and_ipv6_networks() -> None:
    pushed = config.parse_pushed(server(route=["10.0.0.0/8", "fd00:202::/64", "::/0"]))
    assert pushed.routes == (ipaddress.IPv4Network("10.0.0.0/8"),)
    assert pushed.routes6 == (ipaddress.IPv6Network("fd00:202::/64"), ipaddress.IPv6Network("::/0"))
    with pytest.raises(ConfigError, match="needs an IPv6 pool"):
        config.parse_pushed(config.ServerConfig(route=["fd00:202::/64"]))
    with pytest.raises(ConfigError, match="--route"):
        config.parse_pushed(server(route=["fe80::/64"]))


def test_client_subnets_take_ipv6() -> None:
    subnets = config.parse_client_subnets(["site=fd00:250::/64", "site=10.9.0.0/24"])
    assert subnets == {
        "site": [ipaddress.IPv6Network("fd00:250::/64"), ipaddress.IPv4Network("10.9.0.0/24")]
    }
    with pytest.raises(ConfigError, match="needs --pool6"):
        config.parse_client_subnets(["site=fd00:250::/64"], ipv6=False)
    with pytest.raises(ConfigError, match="link-local"):
        config.parse_client_subnets(["site=fe80::/64"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[::]:4433", ("::", 4433)),
        ("[fd00::1]:99", ("fd00::1", 99)),
        ("[fd00::1]", ("fd00::1", 4433)),
        ("fd00::1", ("fd00::1", 4433)),
        ("0.0.0.0:4433", ("0.0.0.0", 4433)),
        ("gw6.test:4433", ("gw6.test", 4433)),
    ],
)
def test_ipv6_endpoints(text: str, expected: tuple[str, int]) -> None:
    assert config.parse_endpoint(text, "--server") == expected


def test_the_server_listens_on_both_families_by_default() -> None:
    assert config.parse_endpoint(config.ServerConfig().listen, "--listen") == ("::", 4433)


# -- checksums over the IPv6 pseudo-header ------------------------------------------------------


def test_checksum6_matches_a_known_icmpv6_echo() -> None:
    # An echo request fe80::1 → fe80::2, id 0x1234, seq 1, "vpnlab": checksum computed by hand
    # from RFC 8200 §8.1 (pseudo-header) and RFC 1071 (one's complement sum).
    src, dst = "fe80::1", "fe80::2"
    body = struct.pack("!BBHHH", 128, 0, 0, 0x1234, 1) + b"vpnlab"
    words = [0xFE80, 1, 0xFE80, 2, 0, len(body), 0, 58]  # non-zero pseudo-header words
    words += [w for (w,) in struct.iter_unpack("!H", body)]
    total = sum(words)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    assert packets.checksum6(src, dst, 58, body) == ~total & 0xFFFF
    packet = packets.icmpv6_echo(src, dst)
    assert packets.checksum6(src, dst, 58, packet[40:]) == 0, "a correct checksum sums to zero"


def test_udp6_carries_a_valid_checksum() -> None:
    packet = packets.udp6("fd00:53::7", "fd00:202::2", 9998, 9999, b"hello")
    assert packet[0] >> 4 == 6 and packet[6] == 17 and len(packet) == 40 + 8 + 5
    assert packets.checksum6("fd00:53::7", "fd00:202::2", 17, packet[40:]) == 0
    assert packet[46:48] != b"\0\0", "UDP over IPv6 may not leave the checksum out"
