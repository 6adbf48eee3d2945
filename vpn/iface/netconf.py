"""Interface, address, route and sysctl changes that are all undone on close.

A VPN end changes the network of the machine it runs on; when it stops (cleanly or not) those
changes must go, in reverse order, or the next run meets stale routes. `NetConf` keeps an undo
stack for that (`vpn.iface.undo`). It works in the network namespace of the calling thread at
construction time (callers run inside it: `ip netns exec`, or a container). It speaks netlink
through pyroute2 and never runs `ip`.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
from types import TracebackType
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from vpn.errors import NetConfError
from vpn.iface import routes as kernel_routes
from vpn.iface.netlink import event, perm_hint, strerror
from vpn.iface.routes import MAIN_TABLE, SCOPE_LINK, delete_spec, network
from vpn.iface.sysctl import read_sysctl, sysctl_path, write_sysctl
from vpn.iface.undo import GONE, UndoStack

_IFF_UP = 0x1
IFA_F_NODAD = 0x02
READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)  # /proc/sys in a container
ADDR_GEN_MODE_NONE = 1  # no link-local address: the kernel sends nothing of its own (RS, MLD)


class NetConf:
    """Applies network changes and undoes every one of them, in reverse order, on close().

    Use it from the thread that made it: its netlink socket belongs to the namespace that thread
    was in then, while /proc/sys follows the namespace of whichever thread writes.
    """

    def __init__(self) -> None:
        self._ipr = IPRoute()
        self._undo = UndoStack()
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
        return self._undo.pending()

    def _close(self, *, raise_errors: bool) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._undo.unwind(raise_errors=raise_errors)
        finally:
            self._ipr.close()

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
                f"set {ifname} {change}: {strerror(err)}" + perm_hint(err), err.code
            ) from err
        restore: dict[str, Any] = {}
        if "mtu" in change:
            restore["mtu"] = old_mtu
        if "state" in change:
            restore["state"] = "up" if was_up else "down"

        def undo() -> None:
            self._ipr.link("set", index=index, **restore)

        self._undo.push(f"restore {ifname} {restore}", undo)

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
                f"attach {ifname} to bridge {bridge}: {strerror(err)}" + perm_hint(err),
                err.code,
            ) from err

        def undo() -> None:
            self._ipr.link("set", index=index, master=0)

        self._undo.push(f"detach {ifname} from {bridge}", undo)

    # -- addresses ---------------------------------------------------------------------------
    def add_address(self, ifname: str, cidr: str, *, nodad: bool = False) -> None:
        """Put address/prefix `cidr` on `ifname`; one already there is used and left in place.

        `nodad` (IPv6): usable at once, without duplicate address detection — a tunnel has no
        neighbours to ask."""
        try:
            iface = ipaddress.ip_interface(cidr)
        except ValueError as err:
            raise NetConfError(
                f"address {cidr!r} is not an address with a prefix length, like 10.0.8.99/24"
            ) from err
        index = self.link_index(ifname)
        address, prefixlen = str(iface.ip), iface.network.prefixlen
        extra = {"flags": IFA_F_NODAD} if nodad and iface.version == 6 else {}
        try:
            self._ipr.addr("add", index=index, address=address, prefixlen=prefixlen, **extra)
        except NetlinkError as err:
            if err.code == errno.EEXIST:
                note = f"address {iface} was already on {ifname}: used, and left in place on close"
                self.notes.append(note)
                event(logging.INFO, "netconf.adopt", what=f"address {iface}", dev=ifname)
                return
            raise NetConfError(
                f"add address {iface} to {ifname}: {strerror(err)}" + perm_hint(err),
                err.code,
            ) from err

        def undo() -> None:
            self._ipr.addr("del", index=index, address=address, prefixlen=prefixlen)

        self._undo.push(f"remove address {iface} from {ifname}", undo)

    # -- routes ------------------------------------------------------------------------------
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
        net = network(dst, via)
        spec: dict[str, Any] = {
            "dst": f"{net.network_address}/{net.prefixlen}",
            "family": 10 if net.version == 6 else 2,
            "table": MAIN_TABLE,
        }
        if dev is not None:
            spec["oif"] = self.link_index(dev)
        if via is not None:
            spec["gateway"] = via
        else:
            spec["scope"] = SCOPE_LINK
        if metric is not None:
            spec["priority"] = metric
        how = " ".join(part for part in (dev and f"dev {dev}", via and f"via {via}") if part)
        previous = []
        if replace:
            previous = [
                kernel_routes.route_spec(m)
                for m in kernel_routes.find_routes(self._ipr, net)
                if m.get_attr("RTA_PRIORITY") == metric
                or (metric is None and m.get_attr("RTA_PRIORITY") in (None, 0, 1024))
            ][:1]
        try:
            self._ipr.route("replace" if replace else "add", **spec)
        except NetlinkError as err:
            raise kernel_routes.route_error(self._ipr, net, how, err) from err

        delete = delete_spec(spec)

        def undo() -> None:
            try:
                self._ipr.route("del", **delete)
            finally:
                for old in previous:
                    self._ipr.route("add", **old)

        what = f"remove route {net} {how}" + (" and put the old one back" if previous else "")
        self._undo.push(what, undo, key=("route", net, metric))

    def del_route(self, dst: str, *, metric: int | None = None) -> None:
        """Remove the route to `dst`: one this NetConf added is undone now (and forgotten);
        someone else's is put back on close()."""
        self._check_open()
        net = network(dst)
        mine = self._undo.take(("route", net, metric))
        if mine is not None:
            try:
                mine.action()
            except NetlinkError as err:
                if err.code not in GONE:
                    raise NetConfError(f"delete route to {net}: {strerror(err)}", err.code) from err
            return
        routes = [
            m
            for m in kernel_routes.find_routes(self._ipr, net)
            if metric is None or m.get_attr("RTA_PRIORITY") == metric
        ]
        if not routes:
            raise NetConfError(
                f"no route to {net} to delete (see `ip route`); nothing was changed", errno.ESRCH
            )
        old = kernel_routes.route_spec(routes[0])
        delete = delete_spec(old)
        try:
            self._ipr.route("del", **delete)
        except NetlinkError as err:
            raise NetConfError(
                f"delete route to {net}: {strerror(err)}" + perm_hint(err), err.code
            ) from err

        def put_back() -> None:
            self._ipr.route("add", **old)

        what = f"put back route {net} {kernel_routes.describe(self._ipr, routes[0])}"
        self._undo.push(what, put_back)

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
            raise NetConfError(f"route get {address}: {strerror(err)}", err.code) from err
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
        return read_sysctl(key)

    def set_sysctl(self, key: str, value: str | int) -> None:
        """Write sysctl `key`; close() writes the old value back."""
        self._check_open()
        path = sysctl_path(key)
        old = self.read_sysctl(key)
        new = str(value)
        if old == new:
            return
        write_sysctl(key, new)

        def undo() -> None:
            path.write_text(old + "\n")

        self._undo.push(f"sysctl {key}={old}", undo)

    def ipv4_forwarding(self) -> bool:
        return self.read_sysctl("net.ipv4.ip_forward") == "1"

    def set_ipv4_forwarding(self, on: bool) -> None:
        """Turn IPv4 forwarding on or off in this namespace; close() restores the old value."""
        self.set_sysctl("net.ipv4.ip_forward", 1 if on else 0)

    def ipv6_forwarding(self) -> bool:
        return self.read_sysctl("net.ipv6.conf.all.forwarding") == "1"

    def set_ipv6_forwarding(self, on: bool) -> None:
        """IPv6 forwarding on or off in this namespace; close() restores the old value."""
        self.set_sysctl("net.ipv6.conf.all.forwarding", 1 if on else 0)

    def enable_ipv6(self, ifname: str) -> None:
        """IPv6 on `ifname` (a tunnel device, still down), with only the addresses given to it:
        no link-local address and no router advertisements taken, so the kernel puts no packet
        of its own (router solicitation, MLD report) into the tunnel. Undone on close()."""
        base = f"net/ipv6/conf/{ifname}"
        if not sysctl_path(f"{base}/disable_ipv6").exists():
            raise NetConfError(
                f"{ifname} has no IPv6 on this host (no net.ipv6.conf.{ifname}): boot with IPv6 "
                "or leave out --pool6 on the gateway"
            )
        self.no_link_local(ifname)
        try:
            self.set_sysctl(f"{base}/accept_ra", 0)
        except NetConfError as err:
            if err.code not in READ_ONLY:
                raise
            # A container's /proc/sys is read-only. Harmless here: the peer at the tunnel's far
            # end is the only sender on it, and it sends no router advertisement.
            event(logging.DEBUG, "netconf.ipv6", dev=ifname, result="accept_ra left as it is")
        # Inherited from net.ipv6.conf.default.disable_ipv6 (0 in a dual-stack container);
        # set_sysctl writes nothing when the value is already right.
        self.set_sysctl(f"{base}/disable_ipv6", 0)

    def no_link_local(self, ifname: str) -> None:
        """No link-local address on `ifname` (addr_gen_mode none): with no address of its own
        the kernel sends nothing of IPv6's own on it. Set through netlink, so that it works where
        /proc/sys is read-only (a container); close() restores the old mode."""
        index = self.link_index(ifname)
        mode_file = sysctl_path(f"net/ipv6/conf/{ifname}/addr_gen_mode")
        if not mode_file.exists():
            return  # no IPv6 on this device: nothing to quiet
        old = int(mode_file.read_text())
        if old == ADDR_GEN_MODE_NONE:
            return

        def set_mode(mode: int) -> None:
            spec = {"attrs": [["AF_INET6", {"attrs": [["IFLA_INET6_ADDR_GEN_MODE", mode]]}]]}
            self._ipr.link("set", index=index, IFLA_AF_SPEC=spec)

        try:
            set_mode(ADDR_GEN_MODE_NONE)
        except NetlinkError as err:
            raise NetConfError(
                f"set addr_gen_mode none on {ifname}: {strerror(err)}" + perm_hint(err), err.code
            ) from err
        self._undo.push(f"addr_gen_mode {ifname}={old}", lambda: set_mode(old))

    def disable_ipv6(self, ifname: str) -> bool:
        """Turn IPv6 off on `ifname`, so router solicitations do not leak into the tunnel.

        Returns False (and changes nothing) where the kernel has no IPv6 for it.
        """
        key = f"net/ipv6/conf/{ifname}/disable_ipv6"
        if not sysctl_path(key).exists():
            event(logging.DEBUG, "netconf.ipv6", dev=ifname, result="no ipv6 here")
            return False
        try:
            self.set_sysctl(key, 1)
        except NetConfError as err:
            if err.code not in READ_ONLY:
                raise
            # /proc/sys is read-only (a container): IPv6 stays on, but with no address.
            self.no_link_local(ifname)
            event(logging.DEBUG, "netconf.ipv6", dev=ifname, result="no link-local address")
        return True
