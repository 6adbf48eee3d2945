"""The client's end of the tunnel: the TUN (or TAP) device, its address, the routes and the name
servers the gateway's CONFIG asks for. It outlives a broken connection: while the client
reconnects, traffic for the tunnel has nowhere else to go (no leak into the clear). A CONFIG
that changes only routes or name servers (a reload on the gateway) is applied as a difference,
through the same undo stack, with the device and its address left as they are."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from ipaddress import IPv4Network, IPv6Network

from vpn import log, protocol
from vpn.client.resolver import Resolver
from vpn.errors import ResolverError
from vpn.iface.netconf import NetConf
from vpn.iface.tun import Tun, open_tun

ResolverFactory = Callable[[str], Resolver]  # the TUN's name → where name servers go


class Tunnel:
    def __init__(self, name: str, resolver: ResolverFactory | None = None) -> None:
        self.name = name  # the device name or pattern (--tun)
        self.tun: Tun | None = None
        self.net: NetConf | None = None
        self.applied: protocol.Config | None = None
        self.resolver_for = resolver  # None: --no-dns
        self.resolver: Resolver | None = None
        self.updates = 0  # CONFIGs applied as a difference (routes, name servers)

    def apply(self, config: protocol.Config) -> None:
        """Configure the TUN, routes and name servers; a CONFIG with the same address, MTU and
        features only changes what differs.

        Runs in the netlink thread, with the TUN reader paused (or untouched, for an update).
        """
        if self.applied == config:
            return
        if self.applied is not None and self.tun is not None and self.applied.same_link(config):
            return self._update(config)
        self.teardown()
        stack = NetConf()
        try:
            name = self.name.replace("tun%d", "tap%d") if config.tap else self.name
            tun = open_tun(name, tap=config.tap, vnet_hdr=config.offload, offload=config.offload)
        except BaseException:
            stack.close()
            raise
        self.tun, self.net = tun, stack
        try:
            if config.tap:
                pass  # a port on the LAN: IPv6 on it as on any Ethernet, carried as it is
            elif config.address6 is None:
                stack.disable_ipv6(tun.name)  # no IPv6 in this tunnel: none may leak into it
            else:
                stack.enable_ipv6(tun.name)
                stack.add_address(tun.name, str(config.address6), nodad=True)
            stack.add_address(tun.name, str(config.address))
            stack.set_link(tun.name, up=True, mtu=config.mtu)
            for route in self._own(config, config.routes):
                stack.add_route(str(route), dev=tun.name)
            for route in self._own(config, self._routes6(config)):
                stack.add_route(str(route), dev=tun.name)
        except BaseException:
            self.teardown()
            raise
        self.applied = config
        self._dns(config)
        log.event(
            "configured",
            tun=tun.name,
            address=str(config.address),
            address6=str(config.address6 or "-"),
            routes=",".join(map(str, (*config.routes, *self._routes6(config)))) or "-",
            mtu=config.mtu,
            offload=config.offload,
        )

    @staticmethod
    def _routes6(config: protocol.Config) -> tuple[IPv6Network, ...]:
        """The IPv6 routes, only with an IPv6 address (else the TUN has no IPv6)."""
        return config.routes6 if config.address6 is not None else ()

    @staticmethod
    def _own(
        config: protocol.Config, routes: Sequence[IPv4Network | IPv6Network]
    ) -> list[IPv4Network | IPv6Network]:
        """The routes that need a route entry (those inside the tunnel's subnet are on-link)."""
        own: list[IPv4Network | IPv6Network] = []
        for route in routes:
            if isinstance(route, IPv4Network):
                if not route.subnet_of(config.address.network):
                    own.append(route)
            elif config.address6 is None or not route.subnet_of(config.address6.network):
                own.append(route)
        return own

    def _update(self, config: protocol.Config) -> None:
        old = self.applied
        assert old is not None and self.net is not None and self.tun is not None
        before: tuple[IPv4Network | IPv6Network, ...] = (*old.routes, *self._routes6(old))
        after: tuple[IPv4Network | IPv6Network, ...] = (*config.routes, *self._routes6(config))
        gone = [r for r in self._own(old, before) if r not in after]
        new = [r for r in self._own(config, after) if r not in before]
        for route in gone:
            self.net.del_route(str(route))
        for route in new:
            self.net.add_route(str(route), dev=self.tun.name)
        self.applied = config
        if (old.dns, old.search) != (config.dns, config.search):
            self._dns(config)
        self.updates += 1
        log.event(
            "updated",
            tun=self.tun.name,
            added=",".join(map(str, new)) or "-",
            removed=",".join(map(str, gone)) or "-",
            dns=",".join(map(str, config.dns)) or "-",
        )

    def _dns(self, config: protocol.Config) -> None:
        """Name servers into the resolver, or the resolver back when none are pushed. A refusal
        (the host's resolv.conf) or a failure leaves the tunnel up, and is logged."""
        if self.resolver_for is None or self.tun is None:
            return
        try:
            if not config.dns and not config.search:
                self._restore_dns()
                return
            if self.resolver is None:
                self.resolver = self.resolver_for(self.tun.name)
            self.resolver.apply(config.dns, config.search)
        except ResolverError as exc:
            log.warn("dns_not_applied", reason=str(exc))

    def _restore_dns(self) -> None:
        if self.resolver is not None:
            try:
                self.resolver.restore()
            except ResolverError as exc:
                log.error("dns_restore_failed", reason=str(exc))
            self.resolver = None

    def teardown(self) -> None:
        """Undo apply (in the netlink thread; the TUN reader is already paused)."""
        self._restore_dns()
        if self.net is not None:
            self.net.close()
            self.net = None
        if self.tun is not None:
            self.tun.close()
            self.tun = None
        self.applied = None
