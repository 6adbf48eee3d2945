"""Each limit of the pure modules at its edge and its neighbour, each message exactly: the
checks mutation testing showed no test held (results/mutation.json, docs/testing.md)."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
import struct

import pytest

from vpn import config, packets, protocol, wirejson
from vpn.errors import ConfigError, ProtocolError
from vpn.pool import MEMO_MAX, AddressPool, RouteTable
from vpn.protocol import MsgType
from vpn.server.admission import AdmissionCounters, LoginThrottle, PendingLimits

NET = ipaddress.IPv4Network("192.168.53.0/24")
IP = ipaddress.IPv4Address


# -- protocol ------------------------------------------------------------------------------------


def test_control_messages_are_compact_and_sorted_on_the_wire() -> None:
    frame = protocol.encode_control(MsgType.HELLO, {"name": "c", "features": [], "version": 1})
    assert frame == struct.pack("!I", 1 << 24 | 38) + b'{"features":[],"name":"c","version":1}'


@pytest.mark.parametrize(
    ("kind", "limit"), [(MsgType.DATA, protocol.MAX_DATA), (MsgType.HELLO, 8192)]
)
def test_encode_and_parse_accept_exactly_the_limit(kind: MsgType, limit: int) -> None:
    frame = protocol.encode(kind, bytes(limit))
    assert protocol.parse_header(struct.unpack("!I", frame[:4])[0]) == (kind, limit)
    with pytest.raises(
        ValueError, match=rf"^{kind.name} payload of {limit + 1} bytes exceeds {limit}$"
    ):
        protocol.encode(kind, bytes(limit + 1))
    with pytest.raises(ProtocolError, match=rf"^{kind.name} frame of {limit + 1} bytes exceeds"):
        protocol.parse_header(kind << 24 | (limit + 1))


def test_the_walk_says_where_the_next_frame_ends() -> None:
    stream = protocol.encode(MsgType.KEEPALIVE) + protocol.encode(MsgType.DATA, b"xy")
    packets, control, pos, need = protocol.walk(memoryview(stream), 0, len(stream))
    assert (packets, control[0] if control else None, pos, need) == ([], MsgType.KEEPALIVE, 4, 8)


@pytest.mark.parametrize(("length", "ok"), [(256, True), (257, False)])
def test_string_fields_up_to_256_characters(length: int, ok: bool) -> None:
    payload = json.dumps({"version": 1, "name": "c", "user": "u" * length}).encode()
    if ok:
        assert protocol.decode_hello(payload).user == "u" * length
    else:
        with pytest.raises(
            ProtocolError, match=r"^HELLO: field 'user' must be a string of at most 256$"
        ):
            protocol.decode_hello(payload)


CONFIG = {"address": "192.168.53.9/24", "server_address": "192.168.53.1", "mtu": 1400,
          "routes": [], "keepalive": 10, "dead_peer": 30}  # fmt: skip


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"mtu": 576}, None),
        ({"mtu": 65535}, None),
        ({"mtu": 575}, "CONFIG: field 'mtu': 575 out of range 576..65535"),
        ({"mtu": 65536}, "CONFIG: field 'mtu': 65536 out of range 576..65535"),
        ({"routes": ["10.0.0.0/8"] * 64}, None),
        ({"routes": ["10.0.0.0/8"] * 65}, "CONFIG: field 'routes': must be a list of at most 64"),
        ({"routes": "10.0.0.0/8"}, "CONFIG: field 'routes': must be a list of at most 64"),
        ({"features": "tap"}, "CONFIG: field 'features': must be a list"),
        ({"keepalive": 0.5, "dead_peer": 0.75}, None),
        ({"keepalive": 3600, "dead_peer": 86400}, None),
        ({"keepalive": 0}, "CONFIG: keepalive must be in (0, 3600] and below dead_peer (<= 86400)"),
        ({"keepalive": 3600.5, "dead_peer": 9000}, "CONFIG: keepalive must be in"),
        ({"keepalive": 30, "dead_peer": 30}, "CONFIG: keepalive must be in"),
        ({"dead_peer": 86400.5}, "CONFIG: keepalive must be in"),
        ({"mtu": None}, "CONFIG: field 'mtu': None out of range"),
    ],
)
def test_config_limits(change: dict[str, object], error: str | None) -> None:
    payload = json.dumps({**CONFIG, **change}).encode()
    if error is None:
        decoded = protocol.decode_config(payload)
        assert decoded.mtu == {**CONFIG, **change}["mtu"]
        assert len(decoded.routes) == len({**CONFIG, **change}["routes"])  # type: ignore[arg-type]
    else:
        with pytest.raises(ProtocolError) as err:
            protocol.decode_config(payload)
        assert str(err.value).startswith(error), err.value


def test_a_missing_config_field_is_named() -> None:
    payload = json.dumps({k: v for k, v in CONFIG.items() if k != "server_address"}).encode()
    with pytest.raises(ProtocolError, match=r"^CONFIG: field 'server_address' missing$"):
        protocol.decode_config(payload)


def test_reasons_are_cut_at_512_and_retry_is_false_only_when_false() -> None:
    frame = protocol.encode_reason(MsgType.ERROR, "r" * 600)
    assert protocol.decode_reason(frame[4:]) == ("r" * 512, True)
    assert protocol.decode_reason(b'{"reason": "' + b"s" * 600 + b'", "retry": 0}') == (
        "s" * 512,
        True,
    )
    assert protocol.decode_reason(b'{"reason": 5, "retry": false}') == ("", False)
    assert protocol.decode_reason(b"") == ("", True)


def test_ipv4_addresses_of_a_packet_at_an_offset() -> None:
    packet = bytes(range(30))
    assert protocol.ipv4_source(packet) == bytes([12, 13, 14, 15])
    assert protocol.ipv4_destination(packet) == bytes([16, 17, 18, 19])
    assert protocol.ipv4_source(packet, 10) == bytes([22, 23, 24, 25])
    assert protocol.ipv4_destination(packet, 10) == bytes([26, 27, 28, 29])


# -- wirejson ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("[" * 7 + "]" * 7, True),  # MAX_DEPTH itself: the object and 7 lists
        ("[" * 8 + "]" * 8, False),
        ("[[],[],[],[],[],[],[],[],[],[]]", True),  # wide, not deep
        ('"' + "[" * 20 + '"', True),
    ],
)
def test_depth_is_counted_exactly(text: str, ok: bool) -> None:
    payload = ('{"v": ' + text + "}").encode()
    if ok:
        assert wirejson.load_object(payload, "X")["v"] is not None
    else:
        with pytest.raises(ProtocolError, match=r"^X: JSON nested deeper than 8 levels$"):
            wirejson.load_object(payload, "X")


def test_wirejson_messages() -> None:
    with pytest.raises(ProtocolError, match=r"^X: not a JSON object \(a key appears twice\)$"):
        wirejson.load_object(b'{"a": 1, "a": 2}', "X")
    with pytest.raises(ProtocolError, match=r"^X: not a JSON object \(1234567890123456 is out"):
        wirejson.load_object(b'{"a": 12345678901234567890e999}', "X")


# -- pool ----------------------------------------------------------------------------------------


def test_the_hash_slot_of_an_identity_is_pinned() -> None:
    """sha256 of the identity, first 8 bytes big-endian, modulo the size: the same on every
    machine and version (a change would move every client at the next restart)."""
    import hashlib

    for name in ("client1", "laptop-alice"):
        slot = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % 254
        assert AddressPool(NET).lease(name) == IP(int(NET.network_address) + 1 + slot)


def test_a_taken_slot_moves_the_newcomer_up_not_down() -> None:
    slot = AddressPool(NET).lease("client1")
    pool = AddressPool(NET)
    assert pool.lease("squatter", slot) == slot
    assert pool.lease("client1") == slot + 1


def test_release_twice_and_release_unknown_are_harmless() -> None:
    pool = AddressPool(NET)
    a = pool.lease("client1")
    pool.release("client1")
    pool.release("client1")
    pool.release("nobody")
    assert pool.active() == {} and pool.lease("client1") == a


def test_route_table_subnets_remove_owner_and_length() -> None:
    table: RouteTable[str] = RouteTable()
    wide, narrow = ipaddress.IPv4Network("10.1.0.0/16"), ipaddress.IPv4Network("10.1.0.0/24")
    table.add_subnet(wide, "wide")
    table.add_subnet(narrow, "narrow")
    table.add_host(IP("10.1.0.9"), "host")
    assert table.lookup(IP("10.1.0.5").packed) == "narrow"  # longest prefix first
    assert table.lookup(IP("10.1.0.9").packed) == "host"
    assert table.subnet_owner(narrow) == "narrow" and table.subnet_owner(wide) == "wide"
    assert table.subnet_owner(ipaddress.IPv4Network("10.1.0.0/25")) is None
    assert table.subnet_owner(ipaddress.IPv4Network("10.2.0.0/16")) is None
    assert len(table) == 3 and table.has_subnets
    assert table.owner(IP("10.1.0.5").packed) == "narrow"
    table.remove_subnet(narrow)  # the memo must not keep the old answer
    assert table.owner(IP("10.1.0.5").packed) == "wide" and len(table) == 2
    table.remove_subnet(ipaddress.IPv4Network("10.1.0.0/17"))  # not there: nothing changes
    assert table.subnet_owner(wide) == "wide"
    table.remove_target("host")
    assert table.lookup(IP("10.1.0.9").packed) == "wide" and len(table) == 1


def test_the_owner_memo_is_bounded() -> None:
    table: RouteTable[str] = RouteTable()
    table.add_subnet(ipaddress.IPv4Network("10.0.0.0/8"), "site")
    for i in range(MEMO_MAX + 1):
        assert table.owner(IP(0x0A000000 + i).packed) == "site"
        assert len(table._memo) <= MEMO_MAX


# -- config and admission ------------------------------------------------------------------------


def test_every_option_has_its_help_and_defaults_are_not_shared() -> None:
    for cls in (config.ServerConfig, config.ClientConfig):
        for f in dataclasses.fields(cls):
            assert f.metadata["help"] and "metavar" in f.metadata and "many" in f.metadata, f.name
    one, two = config.ServerConfig(), config.ServerConfig()
    assert one.route == two.route and one.route is not two.route
    assert config.ServerConfig().max_clients == 256 and config.TlsFiles().ca == ""


@pytest.mark.parametrize(
    ("text", "expected"),
    [("gw:1", ("gw", 1)), ("gw:65535", ("gw", 65535)), ("[::1]:4433", ("::1", 4433)),
     ("gw", ("gw", 4433)), ("a:b:9", ("a:b", 9))],
)  # fmt: skip
def test_endpoints(text: str, expected: tuple[str, int]) -> None:
    assert config.parse_endpoint(text, "--server") == expected


@pytest.mark.parametrize("text", ["gw:0", "gw:65536", "gw:x", ":4433"])
def test_bad_endpoints(text: str) -> None:
    with pytest.raises(ConfigError, match=rf"^--server '{text}': "):
        config.parse_endpoint(text, "--server")


def test_client_subnet_names_split_at_the_first_equals_sign() -> None:
    with pytest.raises(ConfigError, match=re.escape("client_subnet 'a=b=10.0.0.0/8'")):
        config.parse_client_subnets(["a=b=10.0.0.0/8"])


def test_pending_limits_count_and_release_per_source() -> None:
    counters = AdmissionCounters()
    released: list[int] = []
    limits = PendingLimits(3, 2, counters, on_release=lambda: released.append(1))
    a1, a2 = limits.acquire("a"), limits.acquire("a")
    assert (
        limits.acquire("a")
        == "2 unauthenticated connections from a already (--max-pending-per-source)"
    )
    assert limits.acquire("a") != ""
    assert counters.refused_per_source == 2
    b1 = limits.acquire("b")
    assert limits.acquire("c") == "3 unauthenticated connections already (--max-pending)"
    assert limits.acquire("c") and counters.refused_pending == 2
    assert counters.as_dict()["refused_pending"] == 2
    for ticket in (a1, a2, b1):
        assert not isinstance(ticket, str) and ticket.released is False
    a1.release()  # type: ignore[union-attr]
    a1.release()  # type: ignore[union-attr]  # twice: counted once
    assert limits.by_source == {"a": 1, "b": 1} and limits.total == 2 and released == [1]
    a2.release()  # type: ignore[union-attr]
    b1.release()  # type: ignore[union-attr]
    assert limits.by_source == {} and limits.total == 0


# -- found by mutation testing, second pass --------------------------------------------------------


def test_checksum_folds_a_carry_out_of_the_first_fold() -> None:
    # 0xffff + 0xffff + 0x0001 = 0x1ffff → 0xffff + 1 = 0x10000 → folds again to 0x0001
    assert packets.checksum(b"\xff\xff\xff\xff\x00\x01") == 0xFFFE


def test_checksums_and_ports_above_32767_are_written_unsigned() -> None:
    raw = packets.ipv4("192.168.0.1", "10.0.0.2", 17, b"", ident=0, ttl=1)
    assert struct.unpack("!H", raw[10:12])[0] >= 0x8000  # this header's checksum is "negative"
    datagram = packets.udp("10.0.0.1", "10.0.0.2", 40000, 65535, b"")
    assert struct.unpack("!HH", datagram[20:24]) == (40000, 65535)


def test_endpoint_hosts_keep_every_letter() -> None:
    assert config.parse_endpoint("hostX:1", "--server") == ("hostX", 1)


def test_reason_frames_carry_at_most_512_characters() -> None:
    frame = protocol.encode_reason(MsgType.ERROR, "r" * 600)
    assert json.loads(frame[4:])["reason"] == "r" * 512
    assert protocol.decode_reason(b'{"retry": false}') == ("", False)
    assert protocol.decode_reason(b'{"reason": "x"}') == ("x", True)


def test_order_errors_name_what_was_expected() -> None:
    with pytest.raises(ProtocolError) as err:
        protocol.check_order(protocol.SERVER_EXPECTS, "data", MsgType.HELLO)
    assert str(err.value) == "HELLO out of order: expected BYE or DATA or KEEPALIVE (data phase)"
    with pytest.raises(ProtocolError) as err:
        protocol.check_order(protocol.SERVER_EXPECTS, "auth", MsgType.DATA)
    assert str(err.value) == "DATA out of order: expected nothing (auth phase)"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_login_failures_are_forgotten_only_after_forget_seconds() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(threshold=3, base=2.0, cap=60.0, forget=900.0, clock=clock)
    for _ in range(3):
        throttle.failed("alice", "10.0.0.1")
    clock.now += 900.0  # exactly `forget`: still remembered
    assert throttle.wait("alice", "10.0.0.2") == 0.0 and len(throttle) == 2
    throttle.failed("alice", "10.0.0.1")  # the 4th failure counts on: 4 s
    assert throttle.wait("alice", "10.0.0.2") == pytest.approx(4.0)
    clock.now += 900.5
    assert throttle.wait("alice", "10.0.0.2") == 0.0 and len(throttle) == 1  # user's forgotten
    throttle.succeeded("bob")
    assert len(throttle) == 1


def test_the_throttle_keeps_exactly_max_entries() -> None:
    throttle = LoginThrottle(max_entries=4, clock=FakeClock())
    for user in ("a", "b", "c"):
        throttle.failed(user, "10.0.0.1")
    assert len(throttle) == 4  # three users and one source
    throttle.failed("d", "10.0.0.1")
    assert len(throttle) == 4


def test_success_clears_the_user_not_the_source() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(threshold=1, base=5.0, clock=clock)
    throttle.failed("alice", "10.0.0.1")
    throttle.succeeded("alice")
    assert throttle.wait("alice", "10.0.0.9") == 0.0
    assert throttle.wait("carol", "10.0.0.1") == pytest.approx(5.0)
