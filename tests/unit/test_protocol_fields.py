"""HELLO and CONFIG fields one by one: the optional ones and their defaults, the messages for a
wrong type, and the depth scan's count."""

from __future__ import annotations

import json
from typing import Any

import pytest

from vpn import config, protocol, wirejson
from vpn.errors import ConfigError, ProtocolError

BASE_CONFIG = {
    "address": "10.8.0.2/24",
    "server_address": "10.8.0.1",
    "mtu": 1400,
    "keepalive": 10,
    "dead_peer": 30,
}


def hello(**fields: Any) -> protocol.Hello:
    return protocol.decode_hello(json.dumps({"version": 1, "name": "c", **fields}).encode())


def hello_refusal(**fields: Any) -> str:
    with pytest.raises(ProtocolError) as info:
        hello(**fields)
    return str(info.value)


def cfg(**fields: Any) -> protocol.Config:
    return protocol.decode_config(json.dumps({**BASE_CONFIG, **fields}).encode())


@pytest.mark.parametrize("key", ["address", "name", "user", "password"])
def test_a_hello_string_field_of_another_type_is_named(key: str) -> None:
    assert hello_refusal(**{key: 5}) == f"HELLO: field {key!r} must be a string of at most 256"


def test_a_hello_keeps_sixteen_features_and_the_optional_strings_default_empty() -> None:
    many = [f"f{i:02}" for i in range(20)]
    got = hello(features=many)
    assert got.features == frozenset(many[:16])
    assert (got.user, got.password, got.address) == ("", "", "")
    assert hello(user="u", password="p").password == "p"


def test_a_config_without_routes_or_dns_servers_has_none() -> None:
    got = cfg()
    assert got.routes == () and got.dns == () and got.search == ()
    assert not got.tap and not got.offload
    assert cfg(dns={"search": ["lab.example"]}).dns == ()
    assert cfg(dns={"search": ["lab.example"]}).search == ("lab.example",)
    assert cfg(dns={"servers": ["192.0.2.53"]}).search == ()
    both = cfg(features=["tap", "offload"])
    assert both.tap and both.offload
    assert cfg(features=["tap"]).tap and not cfg(features=["tap"]).offload


@pytest.mark.parametrize("dns", [["192.0.2.53"], {"servers": [], "other": []}, "x"])
def test_a_dns_field_of_another_shape_says_what_it_must_be(dns: object) -> None:
    with pytest.raises(ProtocolError) as info:
        cfg(dns=dns)
    assert str(info.value) == (
        "CONFIG: field 'dns': must be an object with 'servers' and 'search' lists"
    )


@pytest.mark.parametrize(
    ("data", "depth"),
    [(b"[[],[[]]]", 3), (b"[[[]]][[[]]]", 3), (b'{"a":"[[[["}', 1), (b"", 0), (b"[{}]", 2)],
)
def test_the_depth_scan_counts_each_close(data: bytes, depth: int) -> None:
    assert wirejson._depth(data) == depth


def test_a_recursion_error_from_json_is_a_protocol_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """The depth scan makes this unreachable; without it, json's own recursion is caught too."""
    monkeypatch.setattr(wirejson, "_depth", lambda data: 0)
    with pytest.raises(ProtocolError) as info:
        wirejson.load_object(b"[" * 200_000 + b"]" * 200_000, "HELLO")
    assert str(info.value) == "HELLO: not a JSON object (nested too deep)"


def test_a_bad_pushed_route_is_named_by_its_flag() -> None:
    with pytest.raises(ConfigError) as info:
        config.parse_pushed(config.ServerConfig(route=["10.0.0.1/8"]))
    assert str(info.value) == "--route: 10.0.0.1/8 has host bits set"
