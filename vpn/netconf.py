"""Interface, address, route and sysctl changes that are all undone on close.

A VPN end changes the network of the machine it runs on; when it stops (cleanly or not) those
changes must go, in reverse order, or the next run meets stale routes. `NetConf` keeps an undo
stack for that. It works in the network namespace of the calling thread at construction time
(callers run inside it: `ip netns exec`, or a container). It speaks netlink through pyroute2 and
never runs `ip`.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

_log = logging.getLogger("vpn.netconf")

# What an undo may meet when someone (or the kernel, e.g. a tun closing) removed it first.
_GONE = frozenset({errno.ENODEV, errno.ESRCH, errno.EADDRNOTAVAIL, errno.ENOENT})
_IFF_UP = 0x1
_MAIN_TABLE = 254
_SCOPE_LINK = 253
_SCOPE_NOWHERE = 255
_SYSCTL_ROOT = Path("/proc/sys")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class NetConfError(RuntimeError):
    """A network change failed; the message says what, why and what to do."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class _Undo:
    what: str
    action: Callable[[], None]
    key: tuple[Any, ...] | None = None


def _event(level: int, name: str, **fields: Any) -> None:
    if _log.isEnabledFor(level):
        text = " ".join(f"{k}={v}" for k, v in fields.items())
        _log.log(level, f"{name} {text}", extra={"fields": {"event": name, **fields}})


def _code(err: BaseException) -> int | None:
    return getattr(err, "code", None) or getattr(err, "errno", None)


def _strerror(err: BaseException) -> str:
    if isinstance(err, NetlinkError) and len(err.args) > 1:
        return str(err.args[1])
    return getattr(err, "strerror", None) or str(err)


def _network(dst: str, via: str | None = None) -> Network:
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


def _sysctl_path(key: str) -> Path:
    """`net.ipv4.ip_forward` or `net/ipv6/conf/eth0.5/disable_ipv6` (slashes keep dotted names)."""
    if key.startswith(str(_SYSCTL_ROOT) + "/"):
        return Path(key)
    return _SYSCTL_ROOT / (key if "/" in key else key.replace(".", "/"))


def _delete_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """What names exactly this route for RTM_DELROUTE; scope "nowhere" matches any scope."""
    keys = ("dst", "family", "table", "oif", "gateway", "priority")
    return {k: spec[k] for k in keys if k in spec} | {"scope": _SCOPE_NOWHERE}


class NetConf:
    """Applies network changes and undoes every one of them, in reverse order, on close().

    Use it from the thread that made it: its netlink socket belongs to the namespace that thread
    was in then, while /proc/sys follows the namespace of whichever thread writes.
    """

    def __init__(self) -> None:
        self._ipr = IPRoute()
        self._undo: list[_Undo] = []
        self._closed = False
        self.notes: list[str] = []  # things found already in place: used, and left alone

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> NetConf:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # With an exception in flight, undo failures are logged, not raised over it.
        self._close(raise_errors=exc_type is None)

    def close(self) -> None:
        """Undo everything, newest first. Idempotent; raises only for undo steps that failed
        for another reason than the thing being gone already."""
        self._close(raise_errors=True)

    def pending(self) -> list[str]:
        """What close() will undo, in the order it will do it."""
        return [u.what for u in reversed(self._undo)]

    def _close(self, *, raise_errors: bool) -> None:
        if self._closed:
            return
        self._closed = True
        failures: list[str] = []
        try:
            while self._undo:
                undo = self._undo.pop()
                try:
                    undo.action()
                except Exception as err:
                    if _code(err) in _GONE:
                        _event(logging.INFO, "netconf.undo", what=undo.what, result="already gone")
                        continue
                    _event(logging.WARNING, "netconf.undo", what=undo.what, error=_strerror(err))
                    failures.append(f"{undo.what}: {_strerror(err)}")
                else:
                    _event(logging.DEBUG, "netconf.undo", what=undo.what, result="done")
        finally:
            self._ipr.close()
        if failures and raise_errors:
            raise NetConfError(
                "could not undo: " + "; ".join(failures) + " — check with `ip addr`, `ip route` "
                "and sysctl, and remove what is left by hand"
            )

    def _push(
        self, what: str, action: Callable[[], None], key: tuple[Any, ...] | None = None
    ) -> None:
        self._undo.append(_Undo(what, action, key))

    def _check_open(self) -> None:
        if self._closed:
            raise NetConfError("this NetConf is closed; open a new one for further changes")

    # -- links -------------------------------------------------------------------------------
    def link_index(self, ifname: str) -> int:
        """The ifindex of `ifname` in this network namespace."""
        self._check_open()
        found = self._ipr.link_lookup(ifname=ifname)
        if not found:
            raise NetConfError(
                f"interface {ifname} does not exist in this network namespace — check the name "
                "(`ip link`), and that this runs in the right namespace or container",
                errno.ENODEV,
            )
        return int(found[0])

    def _link(self, index: int) -> Any:
        return self._ipr.get_links(index)[0]

    def set_link(self, ifname: str, *, up: bool = True, mtu: int | None = None) -> None:
        """Bring `ifname` up (or down) and optionally set its MTU; close() restores both."""
        index = self.link_index(ifname)
        link = self._link(index)
        was_up = bool(link["flags"] & _IFF_UP)
        old_mtu = int(link.get_attr("IFLA_MTU"))
        change: dict[str, Any] = {}
        if mtu is not None and mtu != old_mtu:
            change["mtu"] = mtu
        if up != was_up:
            change["state"] = "up" if up else "down"
        if not change:
            return
        try:
            self._ipr.link("set", index=index, **change)
        except NetlinkError as err:
            if err.code == errno.EINVAL and "mtu" in change:
                raise NetConfError(
                    f"set MTU {mtu} on {ifname}: invalid argument — out of range for this "
                    "device (IPv4 needs at least 68); pick another --mtu",
                    err.code,
                ) from err
            raise NetConfError(
                f"set {ifname} {change}: {_strerror(err)}" + self._perm_hint(err), err.code
            ) from err
        restore: dict[str, Any] = {}
        if "mtu" in change:
            restore["mtu"] = old_mtu
        if "state" in change:
            restore["state"] = "up" if was_up else "down"

        def undo() -> None:
            self._ipr.link("set", index=index, **restore)

        self._push(f"restore {ifname} {restore}", undo)

    def set_master(self, ifname: str, bridge: str) -> None:
        """Enslave `ifname` to the existing bridge `bridge` (TAP mode); close() releases it."""
        index = self.link_index(ifname)
        master = self.link_index(bridge)
        kind = self._link(master).get_attr("IFLA_LINKINFO")
        if kind is None or kind.get_attr("IFLA_INFO_KIND") != "bridge":
            raise NetConfError(
                f"{bridge} is not a bridge: create one (ip link add {bridge} type bridge), put "
                "the LAN interface in it, and pass its name to --bridge"
            )
        try:
            self._ipr.link("set", index=index, master=master)
        except NetlinkError as err:
            raise NetConfError(
                f"attach {ifname} to bridge {bridge}: {_strerror(err)}" + self._perm_hint(err),
                err.code,
            ) from err

        def undo() -> None:
            self._ipr.link("set", index=index, master=0)

        self._push(f"detach {ifname} from {bridge}", undo)

    # -- addresses ---------------------------------------------------------------------------
    def add_address(self, ifname: str, cidr: str) -> None:
        """Put address/prefix `cidr` on `ifname`; one already there is used and left in place."""
        try:
            iface = ipaddress.ip_interface(cidr)
        except ValueError as err:
            raise NetConfError(
                f"address {cidr!r} is not an address with a prefix length, like 10.0.8.99/24"
            ) from err
        index = self.link_index(ifname)
        address, prefixlen = str(iface.ip), iface.network.prefixlen
        try:
            self._ipr.addr("add", index=index, address=address, prefixlen=prefixlen)
        except NetlinkError as err:
            if err.code == errno.EEXIST:
                note = f"address {iface} was already on {ifname}: used, and left in place on close"
                self.notes.append(note)
                _event(logging.INFO, "netconf.adopt", what=f"address {iface}", dev=ifname)
                return
            raise NetConfError(
                f"add address {iface} to {ifname}: {_strerror(err)}" + self._perm_hint(err),
                err.code,
            ) from err

        def undo() -> None:
            self._ipr.addr("del", index=index, address=address, prefixlen=prefixlen)

        self._push(f"remove address {iface} from {ifname}", undo)

    # -- routes ------------------------------------------------------------------------------
    def _routes(self, net: Network) -> list[Any]:
        """Routes for exactly `net` in the main table."""
        family = 10 if net.version == 6 else 2
        found = []
        for msg in self._ipr.route("dump", family=family):
            if msg.get_attr("RTA_TABLE", msg["table"]) != _MAIN_TABLE:
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

    def _describe(self, msg: Any) -> str:
        parts = []
        gateway = msg.get_attr("RTA_GATEWAY")
        if gateway:
            parts.append(f"via {gateway}")
        oif = msg.get_attr("RTA_OIF")
        if oif:
            try:
                parts.append(f"dev {self._link(oif).get_attr('IFLA_IFNAME')}")
            except NetlinkError:
                parts.append(f"dev #{oif}")
        metric = msg.get_attr("RTA_PRIORITY")
        if metric is not None:
            parts.append(f"metric {metric}")
        return " ".join(parts) or "no gateway or device"

    def _route_spec(self, msg: Any) -> dict[str, Any]:
        """What re-creates a dumped route (single path)."""
        spec: dict[str, Any] = {
            "dst": f"{msg.get_attr('RTA_DST') or ('::' if msg['family'] == 10 else '0.0.0.0')}"
            f"/{msg['dst_len']}",
            "family": msg["family"],
            "table": _MAIN_TABLE,
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

    def add_route(
        self,
        dst: str,
        *,
        dev: str | None = None,
        via: str | None = None,
        metric: int | None = None,
        replace: bool = False,
    ) -> None:
        """Route `dst` (a prefix, an address, or 'default') through `dev` and/or `via`.

        With replace=True an existing route to `dst` (same metric) is swapped for this one, and
        put back on close().
        """
        self._check_open()
        if dev is None and via is None:
            raise NetConfError(f"route to {dst}: give a device (dev=) or a gateway (via=) or both")
        net = _network(dst, via)
        spec: dict[str, Any] = {
            "dst": f"{net.network_address}/{net.prefixlen}",
            "family": 10 if net.version == 6 else 2,
            "table": _MAIN_TABLE,
        }
        if dev is not None:
            spec["oif"] = self.link_index(dev)
        if via is not None:
            spec["gateway"] = via
        else:
            spec["scope"] = _SCOPE_LINK
        if metric is not None:
            spec["priority"] = metric
        how = " ".join(part for part in (dev and f"dev {dev}", via and f"via {via}") if part)
        previous = []
        if replace:
            previous = [
                self._route_spec(m)
                for m in self._routes(net)
                if m.get_attr("RTA_PRIORITY") == metric
                or (metric is None and m.get_attr("RTA_PRIORITY") in (None, 0, 1024))
            ][:1]
        try:
            self._ipr.route("replace" if replace else "add", **spec)
        except NetlinkError as err:
            raise self._route_error(net, how, metric, err) from err

        delete = _delete_spec(spec)

        def undo() -> None:
            try:
                self._ipr.route("del", **delete)
            finally:
                for old in previous:
                    self._ipr.route("add", **old)

        what = f"remove route {net} {how}" + (" and put the old one back" if previous else "")
        self._push(what, undo, key=("route", net, metric))

    def _route_error(
        self, net: Network, how: str, metric: int | None, err: NetlinkError
    ) -> NetConfError:
        if err.code == errno.EEXIST:
            have = ", ".join(self._describe(m) for m in self._routes(net)) or "in another table"
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
        return NetConfError(
            f"route to {net} {how}: {_strerror(err)}" + self._perm_hint(err), err.code
        )

    def del_route(self, dst: str, *, metric: int | None = None) -> None:
        """Remove the route to `dst`: one this NetConf added is undone now (and forgotten);
        someone else's is put back on close()."""
        self._check_open()
        net = _network(dst)
        for i in range(len(self._undo) - 1, -1, -1):
            undo = self._undo[i]
            if undo.key == ("route", net, metric):
                del self._undo[i]
                try:
                    undo.action()
                except NetlinkError as err:
                    if err.code not in _GONE:
                        raise NetConfError(
                            f"delete route to {net}: {_strerror(err)}", err.code
                        ) from err
                return
        routes = [
            m for m in self._routes(net) if metric is None or m.get_attr("RTA_PRIORITY") == metric
        ]
        if not routes:
            raise NetConfError(
                f"no route to {net} to delete (see `ip route`); nothing was changed", errno.ESRCH
            )
        old = self._route_spec(routes[0])
        delete = _delete_spec(old)
        try:
            self._ipr.route("del", **delete)
        except NetlinkError as err:
            raise NetConfError(
                f"delete route to {net}: {_strerror(err)}" + self._perm_hint(err), err.code
            ) from err

        def undo() -> None:
            self._ipr.route("add", **old)

        self._push(f"put back route {net} {self._describe(routes[0])}", undo)

    def route_get(self, dst: str) -> dict[str, str | None]:
        """Where the kernel would send a packet to address `dst` (`ip route get`)."""
        self._check_open()
        try:
            address = ipaddress.ip_address(dst)
        except ValueError as err:
            raise NetConfError(f"route_get: {dst!r} is not an IP address") from err
        try:
            msg = self._ipr.route("get", dst=str(address))[0]
        except NetlinkError as err:
            if err.code in (errno.ENETUNREACH, errno.EHOSTUNREACH):
                raise NetConfError(
                    f"no route to {address}: add one (through the tunnel, or a default route)",
                    err.code,
                ) from err
            raise NetConfError(f"route get {address}: {_strerror(err)}", err.code) from err
        oif = msg.get_attr("RTA_OIF")
        ifname = self._link(oif).get_attr("IFLA_IFNAME") if oif else None
        return {
            "ifname": ifname,
            "gateway": msg.get_attr("RTA_GATEWAY"),
            "src": msg.get_attr("RTA_PREFSRC"),
        }

    # -- sysctls -----------------------------------------------------------------------------
    def read_sysctl(self, key: str) -> str:
        """The current value of sysctl `key` (dots or slashes), as text."""
        path = _sysctl_path(key)
        try:
            return path.read_text().strip()
        except FileNotFoundError as err:
            raise NetConfError(
                f"sysctl {key} does not exist here ({path}): the module is not loaded, the "
                "interface is missing, or the name is misspelt",
                errno.ENOENT,
            ) from err

    def set_sysctl(self, key: str, value: str | int) -> None:
        """Write sysctl `key`; close() writes the old value back."""
        self._check_open()
        path = _sysctl_path(key)
        old = self.read_sysctl(key)
        new = str(value)
        if old == new:
            return
        try:
            path.write_text(new + "\n")
        except OSError as err:
            dotted = str(path.relative_to(_SYSCTL_ROOT)).replace("/", ".")
            hint = ""
            if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                hint = (
                    f" — /proc/sys is read-only or needs root here; for a container set it at "
                    f"start: docker run --sysctl {dotted}={new} (compose: sysctls:)"
                )
            raise NetConfError(
                f"write sysctl {key}={new}: {err.strerror}{hint}", err.errno
            ) from err

        def undo() -> None:
            path.write_text(old + "\n")

        self._push(f"sysctl {key}={old}", undo)

    def ipv4_forwarding(self) -> bool:
        return self.read_sysctl("net.ipv4.ip_forward") == "1"

    def set_ipv4_forwarding(self, on: bool) -> None:
        """Turn IPv4 forwarding on or off in this namespace; close() restores the old value."""
        self.set_sysctl("net.ipv4.ip_forward", 1 if on else 0)

    def disable_ipv6(self, ifname: str) -> bool:
        """Turn IPv6 off on `ifname`, so router solicitations do not leak into the tunnel.

        Returns False (and changes nothing) where the kernel has no IPv6 for it.
        """
        key = f"net/ipv6/conf/{ifname}/disable_ipv6"
        if not _sysctl_path(key).exists():
            _event(logging.DEBUG, "netconf.ipv6", dev=ifname, result="no ipv6 here")
            return False
        self.set_sysctl(key, 1)
        return True

    @staticmethod
    def _perm_hint(err: NetlinkError) -> str:
        if err.code in (errno.EPERM, errno.EACCES):
            return " — needs root or CAP_NET_ADMIN (docker: --cap-add NET_ADMIN)"
        return ""
