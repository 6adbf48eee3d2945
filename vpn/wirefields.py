"""Checks on the fields of a CONFIG a server pushes: routes, MTU, name servers, search domains.

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
