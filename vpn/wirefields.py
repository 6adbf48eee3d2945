"""Checks on the fields of a CONFIG a server pushes: routes, MTU, name servers, search domains,
and the IPv6 address and routes.

Apart from `vpn.protocol` because the client applies these values to its own machine (routing
table, resolver): a hostile or broken gateway must get a clear ProtocolError for each malformed
field, never a half-applied configuration, and the limits live in one place.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from vpn.errors import ProtocolError

MAX_ROUTES = 64
MAX_DNS = 8  # name servers (glibc reads three; more are a mistake or an attack)
MAX_SEARCH = 8  # search domains
MAX_DOMAIN = 253
IPV6_MIN_MTU = 1280  # RFC 8200: a link that carries IPv6 carries packets of 1280 bytes
MIN_PREFIX6 = 16  # an IPv6 tunnel prefix shorter than this would put half the internet on-link
# IPv6 networks a gateway may not route through the tunnel: the client's own link-local
# addresses, multicast and loopback live there, and taking them over breaks its other links.
_NOT_ROUTABLE6 = tuple(
    ipaddress.IPv6Network(n) for n in ("fe80::/10", "ff00::/8", "::1/128", "::ffff:0:0/96")
)
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")


def field(message: dict[str, Any], key: str, convert: Any, default: Any = None) -> Any:
    """message[key] through `convert`; a missing key is an error unless a default is given."""
    if key not in message:
        if default is not None:
            return default
        raise ProtocolError(f"CONFIG: field {key!r} missing")
    try:
        return convert(message[key])
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"CONFIG: field {key!r}: {exc}") from None


def mtu(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 576 <= value <= 65535:
        raise ValueError(f"{value!r} out of range 576..65535")
    return value


def _strings(value: Any, limit: int, what: str) -> list[str]:
    if not isinstance(value, list) or len(value) > limit:
        raise ValueError(f"must be a list of at most {limit} {what}")
    if not all(isinstance(v, str) and len(v) <= MAX_DOMAIN for v in value):
        raise ValueError(f"every item must be a string of at most {MAX_DOMAIN} characters")
    return value


def routes(value: Any) -> tuple[ipaddress.IPv4Network, ...]:
    return tuple(ipaddress.IPv4Network(r) for r in _strings(value, MAX_ROUTES, "networks"))


def routes6(value: Any) -> tuple[ipaddress.IPv6Network, ...]:
    """IPv6 networks to route through the tunnel: none inside link-local, multicast, loopback
    or IPv4-mapped space (::/0, a default route, is allowed, as 0.0.0.0/0 is for IPv4)."""
    networks = tuple(ipaddress.IPv6Network(r) for r in _strings(value, MAX_ROUTES, "networks"))
    for network in networks:
        if network.prefixlen and any(network.subnet_of(n) for n in _NOT_ROUTABLE6):
            raise ValueError(f"{network} is link-local, multicast, loopback or IPv4-mapped")
    return networks


def address6(value: Any) -> ipaddress.IPv6Address:
    """A unicast IPv6 address a tunnel end may use (not link-local, multicast, loopback, ::)."""
    if not isinstance(value, str) or len(value) > 64:
        raise ValueError("must be an IPv6 address as a string")
    address = ipaddress.IPv6Address(value)
    if address.is_multicast or address.is_link_local or address.is_loopback:
        raise ValueError(f"{address} is not a unicast global or unique-local address")
    if address.is_unspecified or address.ipv4_mapped is not None:
        raise ValueError(f"{address} is not a unicast global or unique-local address")
    return address


def interface6(value: Any) -> ipaddress.IPv6Interface:
    """The client's IPv6 address with the tunnel's prefix, like fd00:53::7/64."""
    if not isinstance(value, str) or "/" not in value:
        raise ValueError("must be an IPv6 address with a prefix length, like fd00:53::7/64")
    text, _, prefix = value.partition("/")
    interface = ipaddress.IPv6Interface(f"{address6(text)}/{prefix}")
    if interface.network.prefixlen < MIN_PREFIX6:
        raise ValueError(f"prefix /{interface.network.prefixlen} is shorter than /{MIN_PREFIX6}")
    return interface


def name_servers(value: Any) -> tuple[ipaddress.IPv4Address, ...]:
    """IPv4 name servers: no names, no ports, nothing a resolv.conf line could be made of."""
    return tuple(ipaddress.IPv4Address(v) for v in _strings(value, MAX_DNS, "addresses"))


def domain(text: str) -> str:
    """A search domain: letters, digits and hyphens in dot-separated labels; lower-cased."""
    name = text.removesuffix(".")
    if not name or len(name) > MAX_DOMAIN or not all(_LABEL.match(p) for p in name.split(".")):
        raise ValueError(f"{text[:80]!r} is not a domain name (labels of letters, digits, '-')")
    return name.lower()


def search_domains(value: Any) -> tuple[str, ...]:
    return tuple(domain(v) for v in _strings(value, MAX_SEARCH, "domains"))


def features(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(f, str) for f in value[:16]):
        raise ValueError("must be a list of strings")
    return value
