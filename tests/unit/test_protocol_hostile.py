"""Hostile control messages: whatever the bytes, decoding ends in a ProtocolError with a
reason (the session's ERROR frame), never another exception."""

from __future__ import annotations

import sys
import threading

import pytest

from vpn import protocol, wirejson
from vpn.errors import ProtocolError

HOSTILE = [
    (b"[" * 10_000, "nested deeper"),
    (b'{"a":' * 10_000 + b"1" + b"}" * 10_000, "nested deeper"),
    (b'{"version":' + b"1" * 5000 + b"}", "number too long"),
    (b'{"version":1,"name":"x","n":' + b"9" * 5000 + b"}", "number too long"),
    (b'{"version":1,"name":"\xff\xfe"}', "not UTF-8"),
    (b"\xc3\x28", "not UTF-8"),
    (b"[1, 2]", "not a JSON object"),
    (b'"hello"', "not a JSON object"),
    (b"", "not a JSON object"),
    (b'{"version": NaN, "name": "x"}', "NaN"),
    (b'{"version": -Infinity, "name": "x"}', "Infinity"),
    (b'{"version": 1e999, "name": "x"}', "out of range"),
    (b'{"version": 1, "version": 1, "name": "x"}', "twice"),
    (b'{"version": 1, "name": "x"', "not a JSON object"),
]


def short_id(value: object) -> str:
    """A test id without backslashes: pytest escapes them again on a second in-process run
    (`mutmut run NAME` collects twice), and the second run would not find the first's ids."""
    return repr(value)[:30].replace("\\", "/")


@pytest.mark.parametrize(("payload", "reason"), HOSTILE, ids=short_id)
def test_hostile_hello_is_a_protocol_error_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=r"^HELLO: ") as info:
        protocol.decode_hello(payload)
    assert reason in str(info.value)


@pytest.mark.parametrize(("payload", "reason"), HOSTILE[:4], ids=short_id)
def test_hostile_config_and_error_frames_too(payload: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        protocol.decode_config(payload)
    with pytest.raises(ProtocolError, match=reason):
        protocol.decode_reason(payload)


def test_brackets_inside_strings_do_not_count_as_depth() -> None:
    hello = protocol.Hello(version=1, name="[[[[{{{{", user="a", password='\\"[[[[[[[[[[[[[[[[')
    decoded = protocol.decode_hello(hello.encode()[protocol.HEADER_LEN :])
    assert decoded.password == hello.password and decoded.name == hello.name


def test_a_real_hello_nests_well_within_the_limit() -> None:
    hello = protocol.Hello(version=1, name="c", features=frozenset({"offload", "tap"}))
    assert protocol.decode_hello(hello.encode()[protocol.HEADER_LEN :]).features == hello.features


def test_the_depth_check_runs_before_json_recurses() -> None:
    """With a recursion limit far below the nesting, json itself would raise RecursionError;
    the linear pre-check must refuse the payload first (on a fresh thread: a shallow stack)."""
    depth = protocol.MAX_CONTROL // 2 - 8
    payload = b"[" * depth + b"]" * depth
    outcome: dict[str, BaseException] = {}

    def decode() -> None:
        try:
            wirejson.load_object(payload, "HELLO")
        except BaseException as exc:
            outcome["error"] = exc

    previous = sys.getrecursionlimit()
    sys.setrecursionlimit(400)
    try:
        thread = threading.Thread(target=decode)
        thread.start()
        thread.join()
    finally:
        sys.setrecursionlimit(previous)
    error = outcome.get("error")
    assert isinstance(error, ProtocolError), outcome
    assert "nested deeper than" in str(error)  # refused by the scan, not by json's recursion
