"""The fuzz properties of tests/fuzz/properties.py, a short hypothesis run of each (`make fuzz`
runs a million inputs under atheris). Structured inputs get past the JSON parser and the frame
headers into each field's own checks; plain bytes try everything else."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz import properties
from vpn import protocol
from vpn.errors import ProtocolError
from vpn.protocol import MsgType

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)


def message(keys: tuple[str, ...]) -> st.SearchStrategy[bytes]:
    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        def pick(kind: str) -> Any:
            if kind in ("present", "extra"):
                return draw(st.booleans())
            return draw(st.sampled_from(properties.VOCABULARY[kind]) | ANY_JSON)

        return properties.json_message(keys, pick)

    return build()


@st.composite
def frame_streams(draw: st.DrawFn) -> bytes:
    """Valid frames, then maybe one header word replaced and the stream cut anywhere."""
    kinds = st.sampled_from([*MsgType])
    frames = draw(st.lists(st.tuples(kinds, st.binary(max_size=300)), max_size=6))
    data = bytearray(b"".join(protocol.encode(kind, payload) for kind, payload in frames))
    if data and draw(st.booleans()):
        word = draw(st.integers(0, 2**32 - 1) | st.sampled_from([DATA_HUGE, HELLO_HUGE, 99 << 24]))
        data[0:4] = struct.pack("!I", word)
    return bytes(data[: draw(st.integers(0, len(data)))])


DATA_HUGE = MsgType.DATA << 24 | 0xFFFFFF
HELLO_HUGE = MsgType.HELLO << 24 | (protocol.MAX_CONTROL + 1)


@FAST
@given(frame_streams() | st.binary(max_size=600))
def test_frames_round_trip_or_are_refused_at_their_header(data: bytes) -> None:
    properties.check_frames(data)


@FAST
@given(message(properties.HELLO_KEYS) | st.binary(max_size=300))
def test_hello_decodes_to_a_fixed_point_or_is_refused_with_a_reason(payload: bytes) -> None:
    properties.check_hello(payload)


@FAST
@given(message(properties.CONFIG_KEYS) | st.binary(max_size=300))
def test_config_decodes_to_a_fixed_point_or_is_refused_with_a_reason(payload: bytes) -> None:
    properties.check_config(payload)


VNET_FIELDS = st.tuples(
    st.sampled_from([0, 1, 2, 3, 4, 0x80]),
    st.sampled_from([0, 1, 3, 4, 5, 0x80, 0x81, 0x85, 7]),
    st.integers(0, 120),
    st.sampled_from([0, 1, 1448, 0xFFFF]),
    st.sampled_from([0, 20, 24, 60]),
    st.sampled_from([0, 6, 16, 2]),
)


@FAST
@given(VNET_FIELDS, st.sampled_from([0x45, 0x46, 0x4F]), st.integers(0, 3), st.integers(0, 200))
def test_client_vnet_check_passes_only_kernel_safe_tun_shapes(
    fields: tuple[int, ...], ihl: int, proto: int, payload: int
) -> None:
    raw = struct.pack("=BBHHHH", *fields) + bytes([ihl, proto]) + payload.to_bytes(2, "big")
    properties.check_vnet(raw)


@FAST
@given(st.binary(min_size=14, max_size=14))
def test_client_vnet_check_on_any_bytes(raw: bytes) -> None:
    properties.check_vnet(raw)


# -- the properties themselves fail on wrong code ------------------------------------------------


def test_the_structured_inputs_reach_a_successful_decode() -> None:
    """Without valid messages among the inputs the fixed-point properties would prove nothing."""
    hello = b'{"version": 1, "name": "c", "features": ["offload"], "address": "10.0.0.2"}'
    config = (
        b'{"address": "192.168.53.9/24", "server_address": "192.168.53.1", "mtu": 1400,'
        b' "routes": ["192.168.60.0/24"], "keepalive": 10, "dead_peer": 30}'
    )
    assert properties.check_hello(hello) and properties.check_config(config)
    vnet_ok = struct.pack("=BBHHHH", 1, 1, 54, 1448, 20, 16) + bytes([0x45, 0, 0x10, 0])
    assert properties.check_vnet(vnet_ok) is None  # TCP GSO with its checksum: let through


@pytest.mark.parametrize(
    "escaped",
    [ValueError("bad"), KeyError("k"), ProtocolError("   ")],
    ids=["ValueError", "KeyError", "no reason"],
)
def test_a_rejection_that_is_not_a_protocol_error_with_a_reason_fails(
    monkeypatch: pytest.MonkeyPatch, escaped: Exception
) -> None:
    def decode(payload: bytes) -> None:
        raise escaped

    monkeypatch.setattr(protocol, "decode_hello", decode)
    with pytest.raises(AssertionError):
        properties.check_hello(b"{}")


def test_a_limit_checked_only_after_the_payload_arrived_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A walker that waits for a huge frame's payload before refusing it breaks the property."""
    real = protocol.split_frames

    def late(buf: memoryview, start: int, end: int) -> tuple[list[protocol.Frame], int]:
        if end - start <= protocol.HEADER_LEN:
            return [], start  # "wait for more": the allocation a peer wants
        return real(buf, start, end)

    monkeypatch.setattr(protocol, "split_frames", late)
    with pytest.raises(AssertionError, match="refused only once its payload came"):
        properties.check_frames(struct.pack("!I", DATA_HUGE) + b"x")
