"""The client's end of the tunnel: the TUN (or TAP) device, its address and the routes the
gateway's CONFIG asks for. It outlives a broken connection: while the client reconnects, traffic
for the tunnel has nowhere else to go (no leak into the clear)."""

from __future__ import annotations

from vpn import log, protocol
from vpn.iface.netconf import NetConf
from vpn.iface.tun import Tun, open_tun


class Tunnel:
    def __init__(self, name: str) -> None:
        self.name = name  # the device name or pattern (--tun)
        self.tun: Tun | None = None
        self.net: NetConf | None = None
        self.applied: protocol.Config | None = None

    def apply(self, config: protocol.Config) -> None:
        """Configure the TUN and routes; kept as they are when a reconnect pushes the same.

        Runs in the netlink thread, with the TUN reader paused.
        """
        if self.applied == config:
            return
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
            stack.disable_ipv6(tun.name)
            stack.add_address(tun.name, str(config.address))
            stack.set_link(tun.name, up=True, mtu=config.mtu)
            for route in config.routes:
                if not route.subnet_of(config.address.network):  # else already on the link
                    stack.add_route(str(route), dev=tun.name)
        except BaseException:
            self.teardown()
            raise
        self.applied = config
        log.event(
            "configured",
            tun=tun.name,
            address=str(config.address),
            routes=",".join(map(str, config.routes)) or "-",
            mtu=config.mtu,
            offload=config.offload,
        )

    def teardown(self) -> None:
        """Undo apply (in the netlink thread; the TUN reader is already paused)."""
        if self.net is not None:
            self.net.close()
            self.net = None
        if self.tun is not None:
            self.tun.close()
            self.tun = None
        self.applied = None
