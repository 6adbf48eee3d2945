"""What the gateway sets up on its machine before the first client: the listening socket, and
the TUN (layer 3) or TAP (layer 2) device with its address, MTU, forwarding and routes."""

from __future__ import annotations

import errno
import ipaddress
import socket

from vpn import log, protocol
from vpn.config import ServerConfig, Subnet
from vpn.errors import ConfigError
from vpn.iface.netconf import NetConf
from vpn.iface.tun import Tun, open_tun, supports_offload


def listen(host: str, port: int) -> socket.socket:
    """A non-blocking listening TCP socket; a bind failure is a ConfigError saying why.

    `::` (the default) is one IPv6 socket that takes IPv4 connections too (IPV6_V6ONLY off);
    on a host without IPv6 it falls back to 0.0.0.0. An explicit address listens on it alone.
    """
    if host == "::" and not ipv6_available():
        log.warn("listen_ipv4_only", reason="no IPv6 on this host: listening on 0.0.0.0")
        host = "0.0.0.0"
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if host == "::":
        listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
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


def ipv6_available() -> bool:
    """Whether this host (network namespace) can open an IPv6 socket."""
    try:
        socket.socket(socket.AF_INET6, socket.SOCK_STREAM).close()
    except OSError:
        return False
    return True


def enable_forwarding(config: ServerConfig, net: NetConf) -> None:
    """IPv4 forwarding on (and IPv6 forwarding with --pool6), if --enable-forwarding allows
    it; else a ConfigError saying so."""
    if config.pool6 and not config.tap and not net.ipv6_forwarding():
        if not config.enable_forwarding:
            raise ConfigError(
                "IPv6 forwarding is off on this host (net.ipv6.conf.all.forwarding = 0), so "
                "IPv6 packets from clients would never reach the LAN; run with "
                "--enable-forwarding or set the sysctl"
            )
        net.set_ipv6_forwarding(True)
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
    client_subnets: dict[str, list[Subnet]],
    address6: ipaddress.IPv6Interface | None = None,
) -> None:
    """A TAP becomes a bridge port (the bridge has the address); a TUN gets the gateway's
    address (and IPv6 address, with --pool6; else IPv6 stays off on it) and the routes to the
    subnets behind clients."""
    if device.tap:
        net.set_link(device.name, up=True, mtu=config.mtu)
        if config.bridge:
            net.set_master(device.name, config.bridge)
        return
    if address6 is None:
        net.disable_ipv6(device.name)
    else:
        net.enable_ipv6(device.name)
        net.add_address(device.name, str(address6), nodad=True)
    net.add_address(device.name, str(address))
    net.set_link(device.name, up=True, mtu=config.mtu)
    for subnets in client_subnets.values():
        for subnet in subnets:
            net.add_route(str(subnet), dev=device.name)
