"""The IPv6 additions at their edges: each limit on both sides, each message in full, the
defaults of the packet builders and every header field they write (`vpn.wirefields`,
`vpn.config.parse_pool6`, `vpn.packets`' IPv6 builders, CONFIG's IPv6 keys, dual-stack lab
networks in the graphs and in the topology's messages)."""

from __future__ import annotations

import ipaddress
import json
import struct

import pytest

from lab.graph import to_mermaid
from lab.model import Topology
from lab.model.topology import Network
from vpn import config, packets, protocol, wirefields
from vpn.errors import ConfigError, ProtocolError

# -- wirefields ---------------------------------------------------------------------------------


def test_routes6_names_its_limit_and_items() -> None:
    assert len(wirefields.routes6(["fd00:202::/64"] * 64)) == 64
    with pytest.raises(ProtocolError) as info:
        wirefields.field({"routes6": ["fd00:202::/64"] * 65}, "routes6", wirefields.routes6)
    assert str(info.value) == "CONFIG: field 'routes6': must be a list of at most 64 networks"


def test_address6_refuses_what_is_not_a_string_of_at_most_64_characters() -> None:
    for bad in (5, None, ["fd00::1"], b"fd00::1"):
        with pytest.raises(ValueError) as info:
            wirefields.address6(bad)
        assert info.type is ValueError
        assert str(info.value) == "must be an IPv6 address as a string"
    # A scope id makes the text as long as one likes: 64 characters pass, 65 do not.
    at_limit = "fd00::1%" + "z" * 56
    assert len(at_limit) == 64
    assert str(wirefields.address6(at_limit)) == at_limit
    with pytest.raises(ValueError) as info:
        wirefields.address6(at_limit + "z")
    assert str(info.value) == "must be an IPv6 address as a string"


def test_interface6_message_prefix_limit_and_one_slash() -> None:
    with pytest.raises(ValueError) as info:
        wirefields.interface6("fd00:53::7")
    assert str(info.value) == "must be an IPv6 address with a prefix length, like fd00:53::7/64"
    assert wirefields.interface6("fd00:53::7/16") == ipaddress.IPv6Interface("fd00:53::7/16")
    with pytest.raises(ValueError) as info:
        wirefields.interface6("fd00:53::7/15")
    assert str(info.value) == "prefix /15 is shorter than /16"
    # The address is what comes before the first slash: the rest goes to the prefix whole.
    with pytest.raises(ValueError, match="Only one '/' permitted in 'fd00:53::7/64/64'"):
        wirefields.interface6("fd00:53::7/64/64")


# -- --pool6 ------------------------------------------------------------------------------------


def pool6(pool: str, **change: object) -> ipaddress.IPv6Network | None:
    settings = config.ServerConfig(pool6=pool)
    for key, value in change.items():
        setattr(settings, key, value)
    return config.parse_pool6(settings)


def test_pool6_prefix_limits_are_inclusive() -> None:
    assert pool6("fd00::/16") == ipaddress.IPv6Network("fd00::/16")
    assert pool6("fd00:53::/126") == ipaddress.IPv6Network("fd00:53::/126")
    for bad in ("fd00::/15", "fd00:53::/127"):
        with pytest.raises(ConfigError) as info:
            pool6(bad)
        assert str(info.value) == f"--pool6 {bad}: the prefix must be /16../126"


def test_pool6_checks_the_address_the_server_takes() -> None:
    # ::/64's first host is ::1, the loopback address (its second, ::2, would pass).
    with pytest.raises(ConfigError) as info:
        pool6("::/64")
    assert str(info.value) == "--pool6 '::/64': ::1 is not a unicast global or unique-local address"


def test_pool6_mtu_edge_and_messages() -> None:
    assert pool6("fd00:53::/64", mtu=1280) == ipaddress.IPv6Network("fd00:53::/64")
    with pytest.raises(ConfigError) as info:
        pool6("fd00:53::/64", mtu=1279)
    assert str(info.value) == (
        "--mtu 1279 is below 1280, the least IPv6 allows: raise --mtu or leave out --pool6"
    )
    with pytest.raises(ConfigError) as info:
        pool6("fd00:53::/64", tap=True)
    assert str(info.value) == "--pool6 is for layer-3 (TUN) mode; a TAP carries IPv6 as it is"


# -- packets ------------------------------------------------------------------------------------

SRC, DST = "fd00:53::7", "fd00:202::2"


def test_ipv6_header_fields() -> None:
    packet = packets.ipv6(SRC, DST, 17, b"abc")
    assert struct.unpack("!IHBB", packet[:8]) == (6 << 28, 3, 17, 64), "hop limit 64 by default"
    assert packet[8:24] == ipaddress.IPv6Address(SRC).packed
    assert packet[24:40] == ipaddress.IPv6Address(DST).packed
    assert packet[40:] == b"abc"
    assert packets.ipv6(SRC, DST, 58, b"", hops=1)[7] == 1


def test_checksum6_takes_any_next_header() -> None:
    # The pseudo-header's next header is an unsigned byte: 253 (experimental) fits.
    body = b"\x01\x02"
    total = sum((0xFD00, 0x53, 7, 0xFD00, 0x202, 2, len(body), 253, 0x0102))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    assert packets.checksum6(SRC, DST, 253, body) == ~total & 0xFFFF


def test_udp6_header_fields_and_high_ports() -> None:
    packet = packets.udp6(SRC, DST, 40000, 65535, b"hello")
    sport, dport, length, _csum = struct.unpack("!HHHH", packet[40:48])
    assert (sport, dport, length) == (40000, 65535, 13)
    assert struct.unpack("!H", packet[4:6])[0] == 13, "the payload length is the UDP length"
    assert packets.checksum6(SRC, DST, 17, packet[40:]) == 0
    assert packet[48:] == b"hello"


def test_udp6_sends_a_zero_checksum_as_ffff() -> None:
    # Two data bytes chosen so that the checksum computes to 0: UDP then sends 0xFFFF (RFC 768;
    # 0 would mean "no checksum", which IPv6 forbids).
    header = struct.pack("!HHHH", 1000, 2000, 10, 0)
    fix = packets.checksum6(SRC, DST, 17, header + b"\0\0")
    data = struct.pack("!H", fix)
    assert packets.checksum6(SRC, DST, 17, header + data) == 0
    packet = packets.udp6(SRC, DST, 1000, 2000, data)
    assert packet[46:48] == b"\xff\xff"


def test_icmpv6_echo_defaults_and_fields() -> None:
    packet = packets.icmpv6_echo(SRC, DST)
    assert packet[6] == packets.IPPROTO_ICMPV6
    kind, code, _csum, ident, seq = struct.unpack("!BBHHH", packet[40:48])
    assert (kind, code, ident, seq) == (packets.ICMPV6_ECHO_REQUEST, 0, 0x1234, 1)
    assert packet[48:] == b"vpnlab"
    assert packets.checksum6(SRC, DST, 58, packet[40:]) == 0


def test_icmpv6_echo_checksum_above_0x7fff() -> None:
    idents = [i for i in range(0, 1 << 16, 257) if packets.icmpv6_echo(SRC, DST, ident=i)[42] >> 7]
    assert idents, "some identifier gives a checksum with its top bit set"
    for ident in idents[:4]:
        packet = packets.icmpv6_echo(SRC, DST, ident=ident)
        assert struct.unpack("!H", packet[44:46])[0] == ident
        assert packets.checksum6(SRC, DST, 58, packet[40:]) == 0


# -- CONFIG -------------------------------------------------------------------------------------


def test_config_sends_ipv6_only_with_both_addresses() -> None:
    half = protocol.Config(
        address=ipaddress.IPv4Interface("192.168.53.9/24"),
        server_address=ipaddress.IPv4Address("192.168.53.1"),
        mtu=1400,
        routes=(),
        keepalive=10,
        dead_peer=30,
        address6=ipaddress.IPv6Interface("fd00:53::9/64"),
    )
    decoded = protocol.decode_config(half.encode()[protocol.HEADER.size :])
    assert decoded.address6 is None and decoded.server_address6 is None


# -- dual-stack lab networks --------------------------------------------------------------------


def test_mermaid_names_both_subnets_of_a_dual_stack_network() -> None:
    lab = Topology(
        {
            "lan": Network(
                "lan",
                ipaddress.IPv4Network("10.1.0.0/24"),
                subnet6=ipaddress.IPv6Network("fd00:1::/64"),
            )
        },
        {},
    )
    assert to_mermaid(lab) == 'graph LR\n  net_lan(["lan 10.1.0.0/24 fd00:1::/64"])\n'


def test_an_unknown_network_names_the_known_ones() -> None:
    net = ipaddress.IPv4Network
    lab = Topology(
        {"wan": Network("wan", net("192.0.2.0/24")), "lan": Network("lan", net("10.1.0.0/24"))},
        {},
    )
    with pytest.raises(KeyError) as info:
        lab.network("dmz")
    assert info.value.args[0] == "no network 'dmz'; networks: lan, wan"


BASE4 = {
    "address": "192.168.53.9/24",
    "server_address": "192.168.53.1",
    "mtu": 1400,
    "routes": [],
    "keepalive": 10,
    "dead_peer": 30,
}


def test_config_without_routes6_routes_none_through_the_tunnel() -> None:
    message = {**BASE4, "address6": "fd00:53::9/64", "server_address6": "fd00:53::1"}
    decoded = protocol.decode_config(json.dumps(message).encode())
    assert decoded.routes6 == ()
    assert decoded.address6 == ipaddress.IPv6Interface("fd00:53::9/64")


def test_config_with_ipv6_takes_an_mtu_of_1280_not_less() -> None:
    message = {**BASE4, "address6": "fd00:53::9/64", "server_address6": "fd00:53::1"}
    assert protocol.decode_config(json.dumps({**message, "mtu": 1280}).encode()).mtu == 1280
    with pytest.raises(ProtocolError) as info:
        protocol.decode_config(json.dumps({**message, "mtu": 1279}).encode())
    assert str(info.value) == "CONFIG: mtu 1279 is below 1280, IPv6's least"


def test_hello_address6_that_is_not_a_string_is_named_in_full() -> None:
    message = {"version": 1, "name": "c", "address6": 6}
    with pytest.raises(ProtocolError) as info:
        protocol.decode_hello(json.dumps(message).encode())
    assert str(info.value) == "HELLO: field 'address6' must be a string of at most 256"
