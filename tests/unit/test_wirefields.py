"""The checks on a pushed CONFIG's fields, called directly: each limit at its edge, each
message in full."""

from __future__ import annotations

import ipaddress

import pytest

from vpn import wirefields
from vpn.errors import ProtocolError


def refusal(key: str, value: object, convert: object) -> str:
    with pytest.raises(ProtocolError) as info:
        wirefields.field({key: value}, key, convert)
    return str(info.value)


@pytest.mark.parametrize(
    ("convert", "limit", "what", "item"),
    [
        (wirefields.routes, 64, "networks", "10.0.0.0/8"),
        (wirefields.name_servers, 8, "addresses", "192.0.2.53"),
        (wirefields.search_domains, 8, "domains", "lab.example"),
    ],
)
def test_list_fields_name_their_limit_and_items(
    convert: object, limit: int, what: str, item: str
) -> None:
    assert len(wirefields.field({"k": [item] * limit}, "k", convert)) == limit
    assert refusal("k", [item] * (limit + 1), convert) == (
        f"CONFIG: field 'k': must be a list of at most {limit} {what}"
    )
    assert (
        refusal("k", item, convert)
        == f"CONFIG: field 'k': must be a list of at most {limit} {what}"
    )
    for bad in ([5], [None], ["x" * 254]):
        assert refusal("k", bad, convert) == (
            "CONFIG: field 'k': every item must be a string of at most 253 characters"
        )


def test_a_domain_up_to_253_characters_in_dotted_labels() -> None:
    longest = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])
    assert len(longest) == 253
    assert wirefields.search_domains([longest, "Lab.Example.", "x-1.y"]) == (
        longest,
        "lab.example",
        "x-1.y",
    )
    assert wirefields.domain(longest + ".") == longest
    too_long = longest + "e"
    with pytest.raises(ValueError) as info:
        wirefields.domain(too_long)
    assert str(info.value) == (
        f"{too_long[:80]!r} is not a domain name (labels of letters, digits, '-')"
    )
    for bad in ("", ".", "a..b", "-a.b", "a-.b", "a b", "a_b", "x" * 64 + ".lab"):
        with pytest.raises(ValueError) as info:
            wirefields.domain(bad)
        assert (
            str(info.value) == f"{bad[:80]!r} is not a domain name (labels of letters, digits, '-')"
        )


def test_routes_and_name_servers_parse_to_addresses() -> None:
    assert wirefields.routes(["10.0.0.0/8", "192.168.1.0/24"]) == (
        ipaddress.IPv4Network("10.0.0.0/8"),
        ipaddress.IPv4Network("192.168.1.0/24"),
    )
    assert wirefields.name_servers(["192.0.2.53"]) == (ipaddress.IPv4Address("192.0.2.53"),)


def test_features_are_strings_only_the_first_sixteen_checked() -> None:
    sixteen = [f"f{i}" for i in range(16)]
    assert wirefields.features([*sixteen, 17]) == [*sixteen, 17]
    with pytest.raises(ValueError, match=r"^must be a list of strings$"):
        wirefields.features([*sixteen[:15], 16])
    with pytest.raises(ValueError, match=r"^must be a list of strings$"):
        wirefields.features("tap")


def test_field_default_and_missing() -> None:
    assert wirefields.field({}, "mtu", wirefields.mtu, 1400) == 1400
    with pytest.raises(ProtocolError) as info:
        wirefields.field({}, "mtu", wirefields.mtu)
    assert str(info.value) == "CONFIG: field 'mtu' missing"
    assert wirefields.field({"mtu": 576}, "mtu", wirefields.mtu) == 576
    assert wirefields.field({"mtu": 65535}, "mtu", wirefields.mtu) == 65535
    assert (
        refusal("mtu", True, wirefields.mtu) == "CONFIG: field 'mtu': True out of range 576..65535"
    )
