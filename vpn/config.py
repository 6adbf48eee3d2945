"""Server and client settings: dataclass defaults ← a TOML file ← command-line flags.

Each field carries its own help text, so `vpn server --help` and the TOML keys can never drift
apart from the code: the parser is generated from these dataclasses.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

from vpn.errors import ConfigError

C = TypeVar("C", bound="TlsFiles")


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
    listen: str = opt("0.0.0.0:4433", "address:port to accept TLS connections on")
    pool: str = opt("192.168.53.0/24", "tunnel address pool; the server takes its first address")
    route: list[str] = opt(
        [], "network pushed to clients as a route (repeatable)", many=True, metavar="CIDR"
    )
    client_subnet: list[str] = opt(
        [], "NAME=CIDR: a subnet that lives behind client NAME (iroute; repeatable)", many=True
    )
    tun: str = opt("tun%d", "TUN device name or pattern")
    mtu: int = opt(1400, "MTU of the TUN device, pushed to clients")
    keepalive: float = opt(10.0, "seconds of silence before a keepalive is sent")
    dead_peer: float = opt(30.0, "seconds without anything from a client before it is dropped")
    handshake_timeout: float = opt(10.0, "seconds a new connection has to finish TLS and HELLO")
    max_clients: int = opt(256, "sessions allowed at once; more are refused with a reason")
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
    control: str = opt("@vpnlab-server", "status socket: a path, or @name for an abstract socket")
    log_level: str = opt("info", "debug, info, warning or error")


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
    control: str = opt("@vpnlab-client", "status socket: a path, or @name for an abstract socket")
    log_level: str = opt("info", "debug, info, warning or error")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per field; defaults are shown in --help but applied later (file may override)."""
    parser.add_argument(
        "--config", metavar="FILE", help="TOML file with these settings (flags win)"
    )
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        factory = f.default_factory
        default = (
            f.default
            if f.default is not dataclasses.MISSING
            else (factory() if callable(factory) else None)
        )
        kind = hints[f.name]
        text = (
            f"{f.metadata['help']} (default: {default!r})"
            if default not in ("", [])
            else f.metadata["help"]
        ).replace("%", "%%")  # argparse expands %-formats in help ("tun%d")
        if kind is bool:
            parser.add_argument(
                _flag(f.name),
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=text,
            )
        elif f.metadata.get("many"):
            parser.add_argument(
                _flag(f.name),
                dest=f.name,
                action="append",
                default=None,
                help=text,
                metavar=f.metadata.get("metavar"),
            )
        else:
            parser.add_argument(
                _flag(f.name),
                dest=f.name,
                type=kind,
                default=None,
                help=text,
                metavar=f.metadata.get("metavar"),
            )


def _coerce(cls: type, key: str, value: Any, source: str) -> Any:
    kind = get_type_hints(cls)[key]
    if get_origin(kind) is list:
        (item,) = get_args(kind)
        if not isinstance(value, list) or not all(isinstance(v, item) for v in value):
            raise ConfigError(f"{source}: '{key}' must be a list of {item.__name__}")
        return list(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{source}: '{key}' must be {kind.__name__}, not {type(value).__name__}")
    return value


def load(cls: type[C], args: argparse.Namespace) -> C:
    """Build cls from its defaults, then the TOML file named by --config, then the flags."""
    values: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(cls)}
    path = getattr(args, "config", None)
    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
        for key, value in data.items():
            attr = key.replace("-", "_")
            if attr not in names:
                raise ConfigError(f"{path}: unknown setting '{key}' (see --help for the list)")
            values[attr] = _coerce(cls, attr, value, str(path))
    for name in names:
        value = getattr(args, name, None)
        if value is not None:
            values[name] = value
    config = cls(**values)
    base = Path(path).parent if path else None
    _resolve_paths(config, base)
    return config


def _resolve_paths(config: Any, base: Path | None) -> None:
    """Relative file names in a config file are relative to that file."""
    if base is None:
        return
    for name in ("ca", "cert", "key", "crl", "passwords", "password_file"):
        value = getattr(config, name, "")
        if value and not Path(value).is_absolute():
            setattr(config, name, str(base / value))


def parse_endpoint(text: str, what: str, default_port: int = 4433) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
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


def parse_client_subnets(items: list[str]) -> dict[str, list[ipaddress.IPv4Network]]:
    subnets: dict[str, list[ipaddress.IPv4Network]] = {}
    for item in items:
        name, sep, cidr = item.partition("=")
        if not sep or not name:
            raise ConfigError(
                f"client_subnet {item!r}: expected NAME=CIDR, e.g. site2=192.168.50.0/24"
            )
        try:
            subnets.setdefault(name, []).append(ipaddress.IPv4Network(cidr))
        except ValueError as exc:
            raise ConfigError(f"client_subnet {item!r}: {exc}") from None
    return subnets


def require_tls_files(config: TlsFiles, role: str) -> None:
    missing = [name for name in ("ca", "cert", "key") if not getattr(config, name)]
    if missing:
        flags = ", ".join(_flag(m) for m in missing)
        raise ConfigError(
            f"vpn {role} needs {flags}: make them with `vpn pki lab DIR` (or set them in --config)"
        )
