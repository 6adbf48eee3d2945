"""The paths the benchmark compares, each set up for one measurement and taken down after.

Every path carries the same traffic between the same two nodes (the lab's client and its first
LAN host, through the gateway); only what sits in between changes:

- plain: routing, no VPN (the ceiling): a route on each end via the gateway, for this path only;
- vpn: this VPN, started as the lab starts it (`scenarios.tunnel.Tunnel`);
- vpn-v6: the same VPN, IPv6 inside the tunnel over IPv6 outside: the client connects to the
  gateway's IPv6 address, and the traffic goes to the LAN host's IPv6 address;
- openvpn-tcp, openvpn-udp: OpenVPN 2.6 with the same CA, TLS 1.3 and AES-256-GCM.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench import openvpn
from bench.measure import BenchError, find_pids, ping
from lab.backends.base import Backend, Process
from scenarios.tunnel import Tunnel, nodes_with_role

PATHS = ("plain", "vpn", "vpn-v6", "openvpn-tcp", "openvpn-udp")


@dataclass
class Site:
    """The lab's nodes and addresses the benchmark uses, all read from the compose files."""

    client: str
    gateway: str
    host: str
    host_address: str
    host_address6: str | None  # the host's IPv6 address on the LAN, where it has one
    internet: str  # the client's network (subnet)
    lan: str  # the hosts' network (subnet)
    gateway_internet: str
    gateway_lan: str

    @classmethod
    def of(cls, backend: Backend, tunnel: Tunnel) -> Site:
        topology = backend.topology
        gateway = tunnel.gateway
        host = nodes_with_role(backend, "host")[0]
        client = topology.node(tunnel.clients[0])
        internet = tunnel.network
        (lan,) = [n for n in host.networks if n in gateway.networks]
        return cls(
            client=client.name,
            gateway=gateway.name,
            host=host.name,
            host_address=str(host.address(lan)),
            host_address6=str(host.attachment(lan).address6 or "") or None,
            internet=str(topology.network(internet).subnet),
            lan=str(topology.network(lan).subnet),
            gateway_internet=str(gateway.address(internet)),
            gateway_lan=str(gateway.address(lan)),
        )


@dataclass
class Running:
    """A path that is up: the processes whose CPU time the benchmark charges to it."""

    name: str
    pids: list[int] = field(default_factory=list)
    details: dict[str, str] = field(default_factory=dict)
    target: str | None = None  # the address measured to; None: the host's IPv4 address


@contextlib.contextmanager
def _route(backend: Backend, node: str, network: str, via: str) -> Iterator[None]:
    """A route on node for the length of the block (it must not exist before)."""
    backend.ensure(node, ["ip", "route", "add", network, "via", via])
    try:
        yield
    finally:
        backend.exec(node, ["ip", "route", "del", network, "via", via])


def _check_reachable(backend: Backend, site: Site, path: str, target: str | None = None) -> None:
    try:
        ping(backend, site.client, target or site.host_address, count=3, interval=0.2)
    except BenchError as exc:
        raise BenchError(f"path {path}: the client cannot reach {site.host}: {exc}") from None


@contextlib.contextmanager
def plain(backend: Backend, site: Site, tunnel: Tunnel) -> Iterator[Running]:
    with (
        _route(backend, site.client, site.lan, site.gateway_internet),
        _route(backend, site.host, site.internet, site.gateway_lan),
    ):
        _check_reachable(backend, site, "plain")
        yield Running("plain")


@contextlib.contextmanager
def vpn(backend: Backend, site: Site, tunnel: Tunnel) -> Iterator[Running]:
    with _vpn(backend, site, tunnel, ipv6=False) as running:
        yield running


@contextlib.contextmanager
def vpn6(backend: Backend, site: Site, tunnel: Tunnel) -> Iterator[Running]:
    if not (tunnel.pool6 and tunnel.server_address6 and site.host_address6):
        raise BenchError(
            "path vpn-v6: the lab needs an IPv6 pool on the gateway (label vpnlab.vpn.pool6), "
            "an IPv6 address on the gateway's outer network and on the LAN host"
        )
    with _vpn(backend, site, tunnel, ipv6=True) as running:
        yield running


@contextlib.contextmanager
def _vpn(backend: Backend, site: Site, tunnel: Tunnel, *, ipv6: bool) -> Iterator[Running]:
    """The VPN's server and client; with ipv6, the client connects to the gateway's IPv6
    address and the path is measured to the LAN host's IPv6 address."""
    name = "vpn-v6" if ipv6 else "vpn"
    target = site.host_address6 if ipv6 else site.host_address
    try:
        tunnel.start_server()
        tunnel.start_client(site.client, outer6=ipv6)
        status = tunnel.wait_connected(site.client)
        if ipv6 and not status.get("address6"):
            raise BenchError(f"path {name}: the client got no IPv6 address: {status}")
        _check_reachable(backend, site, name, target)
        server = find_pids(backend, site.gateway, "-m", "vpn", "server")
        client = find_pids(backend, site.client, "-m", "vpn", "client")
        if len(server) != 1 or len(client) != 1:
            raise BenchError(
                f"expected one VPN server and one client process, found {server} and {client}"
            )
        details = {"address": status["address"]}
        if ipv6:
            details.update(address6=status["address6"], server=tunnel.endpoint(ipv6=True))
        yield Running(name, server + client, details, target=target)
    finally:
        tunnel.stop_all()


def _openvpn(proto: str) -> Callable[..., contextlib.AbstractContextManager[Running]]:
    @contextlib.contextmanager
    def setup(backend: Backend, site: Site, tunnel: Tunnel) -> Iterator[Running]:
        directory = backend.workdir / "openvpn"
        directory.mkdir(parents=True, exist_ok=True)
        pki = {key: Path(tunnel.path(key)) for key in ("ca", "server", "server.key")}
        cert = Path(backend.node_path(Path(tunnel.pki[site.client])))
        key = Path(backend.node_path(Path(tunnel.pki[f"{site.client}.key"])))
        server_conf = directory / f"server-{proto}.conf"
        client_conf = directory / f"client-{proto}.conf"
        server_conf.write_text(
            openvpn.server_config(
                proto=proto, ca=pki["ca"], cert=pki["server"], key=pki["server.key"],
                push=[site.lan],
            )
        )  # fmt: skip
        client_conf.write_text(
            openvpn.client_config(
                proto=proto, server=site.gateway_internet, server_name=site.gateway,
                ca=pki["ca"], cert=cert, key=key,
            )
        )  # fmt: skip
        processes: list[Process] = []

        def start(node: str, conf: Path, role: str) -> None:
            name = f"openvpn-{proto}-{role}"
            argv = ["openvpn", "--config", backend.node_path(conf)]
            processes.append(backend.spawn(node, argv, name=name))
            tunnel.wait_log(processes[-1], openvpn.READY, f"OpenVPN {proto} {role}")

        try:
            start(site.gateway, server_conf, "server")
            start(site.client, client_conf, "client")
            with _route(backend, site.host, openvpn.POOL, site.gateway_lan):
                _check_reachable(backend, site, f"openvpn-{proto}")
                pids = find_pids(backend, site.gateway, "openvpn", "--config")
                pids += find_pids(backend, site.client, "openvpn", "--config")
                if len(pids) != 2:
                    raise BenchError(f"expected two OpenVPN processes, found {pids}")
                yield Running(f"openvpn-{proto}", pids)
        finally:
            for process in reversed(processes):
                backend.stop(process, timeout=5)

    return setup


SETUPS: dict[str, Callable[..., contextlib.AbstractContextManager[Running]]] = {
    "plain": plain,
    "vpn": vpn,
    "vpn-v6": vpn6,
    "openvpn-tcp": _openvpn("tcp"),
    "openvpn-udp": _openvpn("udp"),
}
