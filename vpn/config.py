"""Server and client settings as dataclasses, and the checks on their values; pure, no I/O.

Each field carries its own help text, so `vpn server --help` and the TOML keys can never drift
apart from the code: the parser (`vpn.settings`) is generated from these dataclasses.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from vpn import wirefields
from vpn.errors import ConfigError


def opt(default: Any, help: str, *, metavar: str | None = None, many: bool = False) -> Any:
    meta = {"help": help, "metavar": metavar, "many": many}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TlsFiles:
    ca: str = opt("", "CA certificate that signs both ends (PEM)", metavar="FILE")
    cert: str = opt("", "this end's certificate (PEM)", metavar="FILE")
    key: str = opt("", "this end's private key (PEM)", metavar="FILE")
    crl: str = opt("", "certificate revocation list to enforce (PEM); empty: none", metavar="FILE")


@dataclass
class ServerConfig(TlsFiles):
    listen: str = opt(
        "[::]:4433",
        "address:port to accept TLS connections on; [::] (the default) takes IPv4 and IPv6",
    )
    pool: str = opt("192.168.53.0/24", "tunnel address pool; the server takes its first address")
    pool6: str = opt(
        "",
        "IPv6 tunnel pool (e.g. fd00:53::/64); the server takes its first address; empty: no IPv6",
        metavar="CIDR",
    )
    route: list[str] = opt(
        [], "network pushed to clients as a route, IPv4 or IPv6 (repeatable)", many=True,
        metavar="CIDR",
    )  # fmt: skip
    client_subnet: list[str] = opt(
        [], "NAME=CIDR: a subnet (IPv4 or IPv6) behind client NAME (iroute; repeatable)", many=True
    )
    tun: str = opt("tun%d", "TUN device name or pattern")
    mtu: int = opt(1400, "MTU of the TUN device, pushed to clients")
    keepalive: float = opt(10.0, "seconds of silence before a keepalive is sent")
    dead_peer: float = opt(30.0, "seconds without anything from a client before it is dropped")
    handshake_timeout: float = opt(10.0, "seconds a new connection has to finish TLS and HELLO")
    max_clients: int = opt(256, "sessions allowed at once; more are refused with a reason")
    max_pending: int = opt(
        256, "connections not yet logged in allowed at once; more are closed at accept"
    )
    max_pending_per_source: int = opt(
        16, "connections not yet logged in allowed from one address; more are closed at accept"
    )
    login_failures: int = opt(3, "failed logins per user or address before backing off")
    login_backoff: float = opt(2.0, "seconds of the first backoff; doubles per further failure")
    login_backoff_max: float = opt(60.0, "longest backoff in seconds after failed logins")
    client_to_client: bool = opt(False, "let clients reach each other through the server")
    passwords: str = opt(
        "", "password file (vpn passwd); when set, clients must log in", metavar="FILE"
    )
    enable_forwarding: bool = opt(False, "turn on net.ipv4.ip_forward (restored on exit)")
    offload: bool = opt(True, "TUN offloads (virtio_net_hdr, TSO/GSO): 64 KB super-packets")
    tap: bool = opt(False, "layer 2: a TAP device instead of TUN; clients join a bridged LAN")
    bridge: str = opt("", "with --tap: attach the TAP device to this existing bridge")
    tap_network: str = opt(
        "", "with --tap: the bridged LAN (CIDR); clients get --pool addresses with its prefix"
    )
    dns: list[str] = opt(
        [], "name server pushed to clients (repeatable; live on reload)", many=True, metavar="IP"
    )
    dns_search: list[str] = opt(
        [], "search domain pushed to clients (repeatable; live on reload)", many=True
    )
    metrics: str = opt(
        "", "serve Prometheus metrics on ADDR:PORT (/metrics); empty: off", metavar="ADDR:PORT"
    )
    metrics_max_identities: int = opt(
        100, "identities with their own metrics labels; the rest are summed as _other"
    )
    control: str = opt("@vpnlab-server", "status socket: a path, or @name for an abstract socket")
    log_level: str = opt("info", "debug, info, warning or error")
    log_format: str = opt("logfmt", "logfmt (one readable line per event) or json")


@dataclass
class ClientConfig(TlsFiles):
    server: str = opt("", "gateway address:port to connect to", metavar="HOST:PORT")
    server_name: str = opt("", "name the server certificate must carry (default: the host)")
    name: str = opt("", "client name sent in HELLO (default: the certificate's CN)")
    tun: str = opt("tun%d", "TUN device name or pattern")
    user: str = opt("", "user name for password login (the password is asked with getpass)")
    password_file: str = opt(
        "", "read the password from this file instead of asking", metavar="FILE"
    )
    reconnect_min: float = opt(0.5, "first reconnect delay in seconds (doubles, with jitter)")
    reconnect_max: float = opt(10.0, "longest reconnect delay in seconds")
    connect_timeout: float = opt(10.0, "seconds for TCP connect, TLS and configuration")
    offload: bool = opt(True, "accept TUN offloads (virtio_net_hdr) when the server uses them")
    dns: bool = opt(True, "apply the name servers the gateway pushes (restored on exit)")
    resolv_conf: str = opt(
        "/etc/resolv.conf", "resolver file the pushed name servers go into", metavar="FILE"
    )
    dns_state_dir: str = opt(
        "/var/lib/vpn", "where the resolver's saved copy waits for a restore after a crash"
    )
    control: str = opt("@vpnlab-client", "status socket: a path, or @name for an abstract socket")
    log_level: str = opt("info", "debug, info, warning or error")
    log_format: str = opt("logfmt", "logfmt (one readable line per event) or json")


@dataclass(frozen=True)
class Pushed:
    """What every client gets in CONFIG besides its address: routes and name servers. The part
    of the server's settings a reload changes for connected clients."""

    routes: tuple[ipaddress.IPv4Network, ...] = ()
    dns: tuple[ipaddress.IPv4Address, ...] = ()
    search: tuple[str, ...] = ()
    routes6: tuple[ipaddress.IPv6Network, ...] = ()


def parse_pushed(config: ServerConfig) -> Pushed:
    """--route, --dns and --dns-search, checked with the limits the client will apply."""
    v6 = [r for r in config.route if isinstance(r, str) and ":" in r]
    v4 = [r for r in config.route if r not in v6]
    try:
        routes = wirefields.routes(v4)
        routes6 = wirefields.routes6(v6)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"--route: {exc}") from None
    if routes6 and not config.pool6:
        raise ConfigError(f"--route {routes6[0]}: an IPv6 route needs an IPv6 pool (--pool6)")
    try:
        dns = wirefields.name_servers(config.dns)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"--dns: {exc} (an IPv4 address, at most {wirefields.MAX_DNS})") from None
    try:
        search = wirefields.search_domains(config.dns_search)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"--dns-search: {exc}") from None
    return Pushed(routes, dns, search, routes6)


def flag(name: str) -> str:
    """The command-line flag of a field: client_subnet → --client-subnet."""
    return "--" + name.replace("_", "-")


def _ipv6_literal(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def parse_endpoint(text: str, what: str, default_port: int = 4433) -> tuple[str, int]:
    """HOST:PORT, [IPV6]:PORT, or a host alone (IPv4, name, [IPV6], or an IPv6 literal without
    brackets: then the port is the default one — write [IPV6]:PORT for another)."""
    host, sep, port = text.rpartition(":")
    if not sep or text.endswith("]") or _ipv6_literal(text):
        host, port = text, str(default_port)
    try:
        number = int(port)
        if not 0 < number < 65536:
            raise ValueError
    except ValueError:
        raise ConfigError(f"{what} {text!r}: the port must be a number from 1 to 65535") from None
    if not host:
        raise ConfigError(f"{what} {text!r}: host missing (expected HOST:PORT)")
    return host.strip("[]"), number


Subnet = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_client_subnets(items: list[str], *, ipv6: bool = True) -> dict[str, list[Subnet]]:
    """NAME=CIDR items, IPv4 or IPv6 (an IPv6 one only when `ipv6`: the server has --pool6)."""
    subnets: dict[str, list[Subnet]] = {}
    for item in items:
        name, sep, cidr = item.partition("=")
        if not sep or not name:
            raise ConfigError(
                f"client_subnet {item!r}: expected NAME=CIDR, e.g. site2=192.168.50.0/24"
            )
        try:
            subnet = ipaddress.ip_network(cidr)
            if subnet.version == 6:
                subnet = wirefields.routes6([cidr])[0]
        except ValueError as exc:
            raise ConfigError(f"client_subnet {item!r}: {exc}") from None
        if subnet.version == 6 and not ipv6:
            raise ConfigError(f"client_subnet {item!r}: an IPv6 subnet needs --pool6")
        subnets.setdefault(name, []).append(subnet)
    return subnets


def parse_pool6(config: ServerConfig) -> ipaddress.IPv6Network | None:
    """--pool6, and what IPv6 needs of the tunnel: an MTU of at least 1280."""
    if not config.pool6:
        return None
    try:
        network = ipaddress.IPv6Network(config.pool6)
        wirefields.address6(str(network.network_address + 1))
    except ValueError as exc:
        raise ConfigError(f"--pool6 {config.pool6!r}: {exc}") from None
    if network.prefixlen < wirefields.MIN_PREFIX6 or network.prefixlen > 126:
        raise ConfigError(f"--pool6 {network}: the prefix must be /{wirefields.MIN_PREFIX6}../126")
    if config.mtu < wirefields.IPV6_MIN_MTU:
        raise ConfigError(
            f"--mtu {config.mtu} is below {wirefields.IPV6_MIN_MTU}, the least IPv6 allows: "
            "raise --mtu or leave out --pool6"
        )
    if config.tap:
        raise ConfigError("--pool6 is for layer-3 (TUN) mode; a TAP carries IPv6 as it is")
    return network


def require_tls_files(config: TlsFiles, role: str) -> None:
    missing = [name for name in ("ca", "cert", "key") if not getattr(config, name)]
    if missing:
        flags = ", ".join(flag(m) for m in missing)
        raise ConfigError(
            f"vpn {role} needs {flags}: make them with `vpn pki lab DIR` (or set them in --config)"
        )
