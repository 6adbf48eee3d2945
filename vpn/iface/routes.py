"""Routes in the kernel's main table, as netlink sees them: finding the ones for a prefix,
describing them, re-creating or deleting exactly one, and saying why adding one failed."""

from __future__ import annotations

import errno
import ipaddress
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from vpn.errors import NetConfError
from vpn.iface.netlink import perm_hint, strerror

MAIN_TABLE = 254
SCOPE_LINK = 253
SCOPE_NOWHERE = 255

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def network(dst: str, via: str | None = None) -> Network:
    if dst == "default":
        v6 = via is not None and ":" in via
        return ipaddress.ip_network("::/0" if v6 else "0.0.0.0/0")
    try:
        return ipaddress.ip_network(dst)
    except ValueError as err:
        try:
            hint = f" (did you mean {ipaddress.ip_network(dst, strict=False)}?)"
        except ValueError:
            hint = " (write it like 10.0.8.0/24, an address, or 'default')"
        raise NetConfError(f"route destination {dst!r}: {err}{hint}") from err


def delete_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """What names exactly this route for RTM_DELROUTE; scope "nowhere" matches any scope."""
    keys = ("dst", "family", "table", "oif", "gateway", "priority")
    return {k: spec[k] for k in keys if k in spec} | {"scope": SCOPE_NOWHERE}


def find_routes(ipr: Any, net: Network) -> list[Any]:
    """Routes for exactly `net` in the main table."""
    family = 10 if net.version == 6 else 2
    found = []
    for msg in ipr.route("dump", family=family):
        if msg.get_attr("RTA_TABLE", msg["table"]) != MAIN_TABLE:
            continue
        if msg["dst_len"] != net.prefixlen:
            continue
        dst = msg.get_attr("RTA_DST")
        if dst is None and net.prefixlen != 0:
            continue
        if dst is not None and ipaddress.ip_address(dst) != net.network_address:
            continue
        found.append(msg)
    return found


def describe(ipr: Any, msg: Any) -> str:
    parts = []
    gateway = msg.get_attr("RTA_GATEWAY")
    if gateway:
        parts.append(f"via {gateway}")
    oif = msg.get_attr("RTA_OIF")
    if oif:
        try:
            parts.append(f"dev {ipr.get_links(oif)[0].get_attr('IFLA_IFNAME')}")
        except NetlinkError:
            parts.append(f"dev #{oif}")
    metric = msg.get_attr("RTA_PRIORITY")
    if metric is not None:
        parts.append(f"metric {metric}")
    return " ".join(parts) or "no gateway or device"


def route_spec(msg: Any) -> dict[str, Any]:
    """What re-creates a dumped route (single path)."""
    spec: dict[str, Any] = {
        "dst": f"{msg.get_attr('RTA_DST') or ('::' if msg['family'] == 10 else '0.0.0.0')}"
        f"/{msg['dst_len']}",
        "family": msg["family"],
        "table": MAIN_TABLE,
        "proto": msg["proto"],
        "scope": msg["scope"],
        "type": msg["type"],
    }
    for attr, key in (
        ("RTA_OIF", "oif"),
        ("RTA_GATEWAY", "gateway"),
        ("RTA_PRIORITY", "priority"),
        ("RTA_PREFSRC", "prefsrc"),
    ):
        value = msg.get_attr(attr)
        if value is not None:
            spec[key] = value
    return spec


def route_error(ipr: Any, net: Network, how: str, err: NetlinkError) -> NetConfError:
    if err.code == errno.EEXIST:
        have = ", ".join(describe(ipr, m) for m in find_routes(ipr, net)) or "in another table"
        return NetConfError(
            f"route to {net} already exists ({have}); remove it (`ip route del {net}`) or "
            "pass replace=True (or another metric) to take it over",
            err.code,
        )
    if err.code == errno.ENETUNREACH:
        return NetConfError(
            f"route to {net} {how}: network is unreachable — the gateway is not on a subnet of "
            "an interface that is up; add an address on its subnet and bring the link up first",
            err.code,
        )
    return NetConfError(f"route to {net} {how}: {strerror(err)}" + perm_hint(err), err.code)
