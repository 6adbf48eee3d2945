"""What the gateway sets up on its machine before the first client: the listening socket, and
the TUN (layer 3) or TAP (layer 2) device with its address, MTU, forwarding and routes."""

from __future__ import annotations

import errno
import ipaddress
import socket

from vpn import log, protocol
from vpn.config import ServerConfig
from vpn.errors import ConfigError
from vpn.iface.netconf import NetConf
from vpn.iface.tun import Tun, open_tun, supports_offload


def listen(host: str, port: int) -> socket.socket:
    """A non-blocking listening TCP socket; a bind failure is a ConfigError saying why."""
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as exc:
        listener.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"listen {host}:{port}: address already in use — is another server running? "
                "stop it or choose another --listen port"
            ) from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise ConfigError(
                f"listen {host}:{port}: no interface on this host has that address"
            ) from None
        raise ConfigError(f"listen {host}:{port}: {exc.strerror}") from None
    listener.listen(1024)
    listener.setblocking(False)
    return listener


def enable_forwarding(config: ServerConfig, net: NetConf) -> None:
    """IPv4 forwarding on, if --enable-forwarding allows it; else a ConfigError saying so."""
    if not net.ipv4_forwarding():
        if not config.enable_forwarding:
            raise ConfigError(
                "IPv4 forwarding is off on this host (net.ipv4.ip_forward = 0), so packets "
                "from clients would never reach the LAN; run with --enable-forwarding "
                "or set the sysctl"
            )
        net.set_ipv4_forwarding(True)


def open_device(config: ServerConfig) -> tuple[Tun, int]:
    """The TAP (--tap) or TUN device, and the bytes of virtio_net_hdr before each packet."""
    if config.tap:
        return open_tun(config.tun.replace("tun%d", "tap%d"), tap=True), 0
    offload = config.offload and supports_offload()
    if config.offload and not offload:
        log.warn("offload_unavailable", reason="kernel lacks TUN vnet_hdr offloads")
    tun = open_tun(config.tun, vnet_hdr=offload, offload=offload)
    return tun, protocol.VNET_HDR_LEN if offload else 0


def configure_device(
    config: ServerConfig,
    net: NetConf,
    device: Tun,
    address: ipaddress.IPv4Interface,
    client_subnets: dict[str, list[ipaddress.IPv4Network]],
) -> None:
    """A TAP becomes a bridge port (the bridge has the address); a TUN gets the gateway's
    address and the routes to the subnets behind clients."""
    if device.tap:
        net.set_link(device.name, up=True, mtu=config.mtu)
        if config.bridge:
            net.set_master(device.name, config.bridge)
        return
    net.disable_ipv6(device.name)
    net.add_address(device.name, str(address))
    net.set_link(device.name, up=True, mtu=config.mtu)
    for subnets in client_subnets.values():
        for subnet in subnets:
            net.add_route(str(subnet), dev=device.name)
