"""Framing and message rules of the wire protocol, on bytes only."""

from __future__ import annotations

import ipaddress
import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fuzz import properties
from vpn import protocol
from vpn.errors import ProtocolError
from vpn.protocol import MsgType


def frames_of(data: bytes) -> tuple[list[protocol.Frame], int]:
    return protocol.split_frames(memoryview(data), 0, len(data))


@given(st.lists(st.tuples(st.sampled_from(list(MsgType)), st.binary(max_size=3000)), max_size=20))
def test_frames_round_trip(messages: list[tuple[MsgType, bytes]]) -> None:
    stream = b"".join(protocol.encode(kind, payload) for kind, payload in messages)
    frames, used = frames_of(stream)
    assert used == len(stream)
    assert [(f.type, bytes(f.payload)) for f in frames] == messages


@given(st.lists(st.binary(min_size=1, max_size=200), min_size=1, max_size=10), st.data())
def test_a_frame_cut_anywhere_waits_for_the_rest(
    payloads: list[bytes], data: st.DataObject
) -> None:
    stream = b"".join(protocol.encode(MsgType.DATA, p) for p in payloads)
    cut = data.draw(st.integers(min_value=0, max_value=len(stream) - 1))
    frames, used = frames_of(stream[:cut])
    assert used <= cut
    assert [bytes(f.payload) for f in frames] == payloads[: len(frames)]
    rest, used_rest = frames_of(stream[used:])
    assert [bytes(f.payload) for f in frames + rest] == payloads
    assert used + used_rest == len(stream)


@settings(max_examples=500)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_parse_or_raise_protocol_error(data: bytes) -> None:
    try:
        frames, used = frames_of(data)
    except ProtocolError:
        return
    assert 0 <= used <= len(data)
    for frame in frames:
        assert frame.type in MsgType


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_arbitrary_control_payloads_decode_or_say_why(data: bytes) -> None:
    """Not just "no crash": a decode is a fixed point of encode → decode, a refusal is a
    ProtocolError naming the message (tests/fuzz/properties.py)."""
    properties.check_hello(data)
    properties.check_config(data)
    try:
        reason, retry = protocol.decode_reason(data)
    except ProtocolError as exc:
        assert str(exc).startswith("ERROR/BYE: "), exc
    else:
        assert len(reason) <= 512 and isinstance(retry, bool)


def test_unknown_type_is_refused() -> None:
    with pytest.raises(ProtocolError, match="unknown frame type 99"):
        frames_of(struct.pack("!I", 99 << 24 | 3) + b"abc")


def test_oversized_frames_are_refused_before_their_payload_arrives() -> None:
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        frames_of(struct.pack("!I", MsgType.DATA << 24 | (protocol.MAX_DATA + 1)))
    with pytest.raises(ProtocolError, match="HELLO frame of 9000 bytes exceeds"):
        frames_of(struct.pack("!I", MsgType.HELLO << 24 | 9000))


def test_encode_refuses_oversized_payloads() -> None:
    with pytest.raises(ValueError):
        protocol.encode(MsgType.DATA, bytes(protocol.MAX_DATA + 1))
    with pytest.raises(ValueError):
        protocol.encode(MsgType.HELLO, bytes(protocol.MAX_CONTROL + 1))


def test_a_gso_super_packet_fits_in_one_frame() -> None:
    frame = protocol.encode(MsgType.DATA, bytes(protocol.VNET_HDR_LEN + 65535))
    frames, _ = frames_of(frame)
    assert len(frames[0].payload) == protocol.VNET_HDR_LEN + 65535


def test_data_header_matches_encode() -> None:
    assert protocol.data_header(1234) + b"x" * 1234 == protocol.encode(MsgType.DATA, b"x" * 1234)


def test_hello_round_trip() -> None:
    hello = protocol.Hello(
        version=protocol.VERSION,
        name="client1",
        features=frozenset({"offload"}),
        user="alice",
        password="s3cret",
        address="192.168.53.7",
    )
    frames, _ = frames_of(hello.encode())
    assert frames[0].type == MsgType.HELLO
    assert protocol.decode_hello(frames[0].payload) == hello


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ({"name": "x"}, "'version' must be an integer"),
        ({"version": 2, "name": "x"}, "version 2 not supported"),
        ({"version": True, "name": "x"}, "'version' must be an integer"),
        ({"version": 1}, "'name' must be a string"),
        ({"version": 1, "name": "x", "features": "offload"}, "'features' must be a list"),
        ({"version": 1, "name": "x", "address": "300.1.1.1"}, "not an IPv4 address"),
        ({"version": 1, "name": "x" * 1000}, "'name' must be a string of at most"),
    ],
)
def test_bad_hellos_say_why(message: dict[str, object], reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        protocol.decode_hello(json.dumps(message).encode())


def test_hello_that_is_not_json() -> None:
    with pytest.raises(ProtocolError, match="not a JSON object"):
        protocol.decode_hello(b"\xff\xfe")
    with pytest.raises(ProtocolError, match="not a JSON object"):
        protocol.decode_hello(b"[1, 2]")


def test_config_round_trip() -> None:
    config = protocol.Config(
        address=ipaddress.IPv4Interface("192.168.53.9/24"),
        server_address=ipaddress.IPv4Address("192.168.53.1"),
        mtu=1400,
        routes=(ipaddress.IPv4Network("192.168.60.0/24"),),
        keepalive=10.0,
        dead_peer=30.0,
        offload=True,
    )
    frames, _ = frames_of(config.encode())
    assert protocol.decode_config(frames[0].payload) == config


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"mtu": 100}, "mtu"),
        ({"routes": "192.168.60.0/24"}, "routes"),
        ({"routes": ["10.0.0.1/8"]}, "host bits set"),
        ({"address": "nonsense"}, "address"),
        ({"keepalive": 60, "dead_peer": 30}, "keepalive"),
    ],
)
def test_bad_configs_say_why(change: dict[str, object], reason: str) -> None:
    message = {
        "address": "192.168.53.9/24",
        "server_address": "192.168.53.1",
        "mtu": 1400,
        "routes": [],
        "keepalive": 10,
        "dead_peer": 30,
    }
    message.update(change)
    with pytest.raises(ProtocolError, match=reason):
        protocol.decode_config(json.dumps(message).encode())


def test_error_reason_and_retry() -> None:
    frames, _ = frames_of(protocol.encode_reason(MsgType.ERROR, "bad password", retry=False))
    assert protocol.decode_reason(frames[0].payload) == ("bad password", False)
    frames, _ = frames_of(protocol.encode_reason(MsgType.BYE, "shutting down"))
    assert protocol.decode_reason(frames[0].payload) == ("shutting down", True)


def test_message_order() -> None:
    assert protocol.check_order(protocol.SERVER_EXPECTS, "hello", MsgType.HELLO) == MsgType.HELLO
    with pytest.raises(ProtocolError, match="DATA out of order: expected HELLO"):
        protocol.check_order(protocol.SERVER_EXPECTS, "hello", MsgType.DATA)
    with pytest.raises(ProtocolError, match="HELLO out of order"):
        protocol.check_order(protocol.SERVER_EXPECTS, "data", MsgType.HELLO)
    with pytest.raises(ProtocolError, match="CONFIG out of order"):
        protocol.check_order(protocol.SERVER_EXPECTS, "data", MsgType.CONFIG)
    with pytest.raises(ProtocolError, match="DATA out of order: expected"):
        protocol.check_order(protocol.CLIENT_EXPECTS, "config", MsgType.DATA)
