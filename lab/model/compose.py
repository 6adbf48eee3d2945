"""Compose files → `Topology`: the lab's addresses live in compose/*.yml and nowhere else.

Only what the backends need is read: networks with their subnets, and for each service its
static addresses, sysctls, capabilities, devices, command and healthcheck. Several files merge
as `docker compose -f a.yml -f b.yml` merges them, so both backends see one and the same lab.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from lab.model.errors import TopologyError
from lab.model.interpolate import interpolate_tree
from lab.model.topology import Attachment, IPAddress, Network, Node, Topology

# Sequences that compose concatenates across files; every other sequence is replaced.
_MERGED_LISTS = frozenset(
    {
        "cap_add",
        "cap_drop",
        "devices",
        "dns",
        "dns_search",
        "dns_opt",
        "expose",
        "external_links",
        "extra_hosts",
        "ports",
        "security_opt",
        "tmpfs",
        "volumes",
    }
)


# -- public API --------------------------------------------------------------------------------
def default_files(repo_root: Path, extra: Sequence[str] = ()) -> list[Path]:
    """compose/lab.yml plus compose/NAME.yml for each NAME in extra (e.g. "clients")."""
    compose = Path(repo_root) / "compose"
    files = [compose / "lab.yml"]
    for name in extra:
        filename = name if name.endswith((".yml", ".yaml")) else f"{name}.yml"
        path = compose / filename
        if not path.is_file():
            known = sorted(p.stem for p in compose.glob("*.yml") if p.stem != "lab")
            raise TopologyError(
                f"{path} does not exist: no extra compose file {name!r}; "
                f"available: {', '.join(known) or 'none'}"
            )
        files.append(path)
    return files


def load(
    files: Sequence[Path],
    environ: Mapping[str, str] | None = None,
    *,
    strict: bool = False,
    profiles: Iterable[str] | None = None,
) -> Topology:
    """Read and merge compose files into a validated Topology.

    environ supplies `${VAR}` values (default: os.environ). With strict=False an unset
    `${VAR:?msg}` becomes "" — the netns backend never needs such values (e.g. the Docker
    bind-mount source); strict=True raises instead, as compose would. profiles: the active
    compose profiles (default: $COMPOSE_PROFILES); services in other profiles are left out.
    """
    if not files:
        raise TopologyError("no compose file given: pass at least compose/lab.yml")
    env = dict(os.environ if environ is None else environ)
    if profiles is None:
        profiles = [p for p in env.get("COMPOSE_PROFILES", "").split(",") if p]
    merger = _Merger()
    for path in files:
        merger.add(Path(path), _read(Path(path), env, strict))
    return merger.topology(frozenset(profiles))


# -- reading -------------------------------------------------------------
def _read(path: Path, env: Mapping[str, str], strict: bool) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise TopologyError(f"{path}: no such compose file") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TopologyError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TopologyError(f"{path}: the top level must be a mapping (services:, networks:)")
    interpolated: dict[str, Any] = interpolate_tree(data, env, strict, str(path))
    return interpolated


# -- merging ---------------------------------------------------------------------------------
def _merge(base: Any, override: Any, key: str = "") -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for k, v in override.items():
            merged[k] = _merge(base[k], v, k) if k in base else v
        return merged
    if isinstance(base, list) and isinstance(override, list) and key in _MERGED_LISTS:
        return base + [v for v in override if v not in base]
    return override


def _as_mapping(value: Any, what: str, where: str) -> dict[str, Any]:
    """compose allows both `[k=v, ...]` / `[name, ...]` and `{k: v}` for these keys."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    if isinstance(value, list):
        result: dict[str, Any] = {}
        for item in value:
            if not isinstance(item, str):
                raise TopologyError(f"{where}: {what} entries must be strings, got {item!r}")
            k, sep, v = item.partition("=")
            result[k.strip()] = v.strip() if sep else None
        return result
    raise TopologyError(f"{where}: {what} must be a list or a mapping, got {value!r}")


class _Merger:
    """Merges files one by one and remembers which file said what, for error messages."""

    def __init__(self) -> None:
        self.files: list[str] = []
        self.services: dict[str, dict[str, Any]] = {}
        self.networks: dict[str, Any] = {}
        self.origin: dict[tuple[str, ...], str] = {}
        self.gateways: dict[str, ipaddress.IPv4Address] = {}
        self.gateways6: dict[str, ipaddress.IPv6Address] = {}

    def add(self, path: Path, data: dict[str, Any]) -> None:
        where = str(path)
        self.files.append(where)
        for key in data:
            if key == "version" or key == "name" or str(key).startswith("x-"):
                continue
            if key not in ("services", "networks", "volumes", "configs", "secrets"):
                raise TopologyError(f"{where}: unknown top-level key {key!r}")
        networks = data.get("networks") or {}
        if not isinstance(networks, dict):
            raise TopologyError(f"{where}: networks: must be a mapping of name → definition")
        for name, definition in networks.items():
            self.networks[name] = _merge(self.networks.get(name), definition or {})
            self.origin["network", name] = where
        services = data.get("services") or {}
        if not isinstance(services, dict):
            raise TopologyError(f"{where}: services: must be a mapping of name → definition")
        for name, definition in services.items():
            service = self._normalise(name, definition, where)
            self.services[name] = _merge(self.services.get(name, {}), service)
            self.origin.setdefault(("service", name), where)
            for network in service.get("networks", {}):
                self.origin["attach", name, network] = where

    def _normalise(self, name: str, service: Any, where: str) -> dict[str, Any]:
        if service is None:
            return {}
        if not isinstance(service, dict):
            raise TopologyError(f"{where}: service {name!r} must be a mapping")
        normalised: dict[str, Any] = dict(service)
        service = normalised
        at = f"{where}: service {name!r}"
        for key in ("networks", "sysctls", "labels", "environment"):
            if key in service:
                service[key] = _as_mapping(service[key], key, at)
        if "network_mode" in service:
            raise TopologyError(
                f"{at}: network_mode is not supported by the lab; join declared networks "
                "with networks: {NAME: {ipv4_address: ...}}"
            )
        return normalised

    # -- building the model ----------------------------------------------------------------
    def topology(self, profiles: frozenset[str]) -> Topology:
        networks = {name: self._network(name, d) for name, d in self.networks.items()}
        self._check_overlaps(networks)
        nodes: dict[str, Node] = {}
        owners: dict[IPAddress, str] = {}
        for name, service in self.services.items():
            wanted = service.get("profiles") or []
            if wanted and not profiles.intersection(wanted):
                continue
            node = self._node(name, service, networks)
            for attachment in node.attachments:
                for address in attachment.addresses:
                    other = owners.get(address)
                    if other is not None:
                        raise TopologyError(
                            f"{self.origin['attach', name, attachment.network]}: service "
                            f"{name!r}: address {address} is already taken by service "
                            f"{other!r} ({self.origin['attach', other, attachment.network]}); "
                            "give each node its own address"
                        )
                    owners[address] = name
            nodes[name] = node
        return Topology(networks=networks, nodes=nodes, files=tuple(self.files))

    def _network(self, name: str, definition: Any) -> Network:
        where = f"{self.origin['network', name]}: network {name!r}"
        if not isinstance(definition, dict):
            raise TopologyError(f"{where} must be a mapping")
        if definition.get("external"):
            raise TopologyError(f"{where} is external: the lab creates its own networks")
        configs = (definition.get("ipam") or {}).get("config") or []
        subnets = [c.get("subnet") for c in configs if isinstance(c, dict) and c.get("subnet")]
        v4 = [s for s in subnets if ":" not in str(s)]
        v6 = [s for s in subnets if ":" in str(s)]
        if not v4:
            raise TopologyError(
                f"{where} has no subnet: add ipam: {{config: [{{subnet: 10.x.y.0/24}}]}} "
                "(the lab's addresses are static)"
            )
        try:
            subnet = ipaddress.IPv4Network(str(v4[0]))
        except ValueError as exc:
            raise TopologyError(f"{where}: invalid subnet {v4[0]!r}: {exc}") from None
        gateway = _gateway(configs, v4[0], where)
        if gateway is not None and not isinstance(gateway, ipaddress.IPv4Address):
            raise TopologyError(f"{where}: the gateway of {subnet} must be an IPv4 address")
        self.gateways[name] = gateway or subnet[1]
        subnet6 = self._subnet6(name, definition, configs, v6, where)
        return Network(
            name=name,
            subnet=subnet,
            internal=bool(definition.get("internal", False)),
            subnet6=subnet6,
        )

    def _subnet6(
        self, name: str, definition: dict[str, Any], configs: list[Any], v6: list[Any], where: str
    ) -> ipaddress.IPv6Network | None:
        """The network's IPv6 subnet: one, with enable_ipv6: true (as Docker needs), or none."""
        enabled = _flag(definition.get("enable_ipv6", False), "enable_ipv6", where)
        if not v6:
            if enabled:
                raise TopologyError(
                    f"{where} has enable_ipv6 but no IPv6 subnet: add one beside the IPv4 one "
                    "in ipam: config: (e.g. {subnet: fd00:1::/64}; the lab's addresses are "
                    "static)"
                )
            return None
        if len(v6) > 1:
            raise TopologyError(
                f"{where} has {len(v6)} IPv6 subnets ({', '.join(map(str, v6))}); "
                "the lab takes one per network"
            )
        if not enabled:
            raise TopologyError(
                f"{where} has the IPv6 subnet {v6[0]} but not enable_ipv6: true; "
                "add it (Docker ignores the subnet without it)"
            )
        try:
            subnet6 = ipaddress.IPv6Network(str(v6[0]))
        except ValueError as exc:
            raise TopologyError(f"{where}: invalid IPv6 subnet {v6[0]!r}: {exc}") from None
        gateway = _gateway(configs, v6[0], where)
        if gateway is not None and not isinstance(gateway, ipaddress.IPv6Address):
            raise TopologyError(f"{where}: the gateway of {subnet6} must be an IPv6 address")
        self.gateways6[name] = gateway or subnet6[1]
        return subnet6

    def _check_overlaps(self, networks: dict[str, Network]) -> None:
        items = list(networks.values())
        for i, a in enumerate(items):
            for b in items[i + 1 :]:
                for mine in b.subnets:
                    for theirs in a.subnets:
                        if mine.version == theirs.version and mine.overlaps(theirs):
                            raise TopologyError(
                                f"{self.origin['network', b.name]}: network {b.name!r} "
                                f"({mine}) overlaps network {a.name!r} ({theirs}); "
                                "subnets must be disjoint"
                            )

    def _node(self, name: str, service: dict[str, Any], networks: dict[str, Network]) -> Node:
        at = f"{self.origin['service', name]}: service {name!r}"
        joined = service.get("networks") or {}
        if not joined:
            raise TopologyError(
                f"{at} joins no network (compose would put it on 'default'); "
                "add networks: {NAME: {ipv4_address: ...}}"
            )
        attachments = []
        for network, options in joined.items():
            where = f"{self.origin['attach', name, network]}: service {name!r}"
            if network not in networks:
                raise TopologyError(
                    f"{where} joins network {network!r}, which no file declares under the "
                    f"top-level networks: (declared: {', '.join(networks) or 'none'})"
                )
            raw = (options or {}).get("ipv4_address") if isinstance(options, dict) else None
            if not raw:
                raise TopologyError(
                    f"{where}: no ipv4_address on network {network!r}; the lab needs a static "
                    "address for every node"
                )
            try:
                address = ipaddress.IPv4Address(str(raw))
            except ValueError:
                raise TopologyError(
                    f"{where}: ipv4_address {raw!r} on network {network!r} is not an IPv4 address"
                ) from None
            subnet = networks[network].subnet
            if address not in subnet:
                raise TopologyError(
                    f"{where}: address {address} on network {network!r} is outside its subnet "
                    f"{subnet}"
                )
            gateway = self.gateways[network]
            if address in (subnet.network_address, subnet.broadcast_address, gateway):
                raise TopologyError(
                    f"{where}: address {address} on network {network!r} is reserved (network, "
                    f"broadcast or Docker's gateway {gateway}); pick another"
                )
            address6 = self._address6(options, networks[network], where)
            attachments.append(Attachment(network=network, address=address, address6=address6))
        return Node(
            name=name,
            attachments=tuple(attachments),
            sysctls={k: _scalar(v) for k, v in (service.get("sysctls") or {}).items()},
            command=_command(service.get("command"), at),
            cap_add=tuple(str(c) for c in service.get("cap_add") or ()),
            devices=tuple(str(d) for d in service.get("devices") or ()),
            healthcheck=_healthcheck(service.get("healthcheck"), at),
            labels={k: _scalar(v) for k, v in (service.get("labels") or {}).items()},
        )

    def _address6(self, options: Any, network: Network, where: str) -> ipaddress.IPv6Address | None:
        """The attachment's ipv6_address: optional, inside the network's IPv6 subnet."""
        raw = options.get("ipv6_address") if isinstance(options, dict) else None
        if not raw:
            return None
        if network.subnet6 is None:
            raise TopologyError(
                f"{where}: ipv6_address {raw} on network {network.name!r}, which has no IPv6 "
                "subnet: give the network enable_ipv6: true and an IPv6 subnet"
            )
        try:
            address = ipaddress.IPv6Address(str(raw))
        except ValueError:
            raise TopologyError(
                f"{where}: ipv6_address {raw!r} on network {network.name!r} is not an IPv6 address"
            ) from None
        subnet6 = network.subnet6
        if address not in subnet6:
            raise TopologyError(
                f"{where}: address {address} on network {network.name!r} is outside its "
                f"IPv6 subnet {subnet6}"
            )
        gateway = self.gateways6[network.name]
        if address in (subnet6.network_address, gateway):
            raise TopologyError(
                f"{where}: address {address} on network {network.name!r} is reserved (the "
                f"subnet-router anycast address or Docker's gateway {gateway}); pick another"
            )
        return address


def _gateway(
    configs: list[Any], subnet: Any, where: str
) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The gateway: an ipam config entry gives for subnet, if any."""
    raw = next(
        (
            c["gateway"]
            for c in configs
            if isinstance(c, dict) and c.get("subnet") == subnet and c.get("gateway")
        ),
        None,
    )
    if raw is None:
        return None
    try:
        return ipaddress.ip_address(str(raw))
    except ValueError:
        raise TopologyError(f"{where}: gateway {raw!r} of {subnet} is not an address") from None


def _flag(value: Any, what: str, where: str) -> bool:
    """A compose boolean (YAML true/false, or the strings an interpolation leaves)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", ""):
        return value.lower() in ("true", "1")
    raise TopologyError(f"{where}: {what} must be true or false, got {value!r}")


def _scalar(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _command(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(shlex.split(value))
    if isinstance(value, list):
        return tuple(str(v) for v in value)
    raise TopologyError(f"{where}: command must be a string or a list, got {value!r}")


def _healthcheck(value: Any, where: str) -> tuple[str, ...]:
    """The healthcheck as an argv to run on the node; () when there is none."""
    if not value:
        return ()
    if not isinstance(value, dict):
        raise TopologyError(f"{where}: healthcheck must be a mapping with test:")
    if value.get("disable"):
        return ()
    test = value.get("test")
    if test is None:
        return ()
    if isinstance(test, str):
        return ("/bin/sh", "-c", test)
    if isinstance(test, list) and test:
        kind, args = str(test[0]), [str(a) for a in test[1:]]
        if kind == "NONE":
            return ()
        if kind == "CMD" and args:
            return tuple(args)
        if kind == "CMD-SHELL" and args:
            return ("/bin/sh", "-c", " ".join(args))
    raise TopologyError(
        f"{where}: healthcheck test must be a string, [CMD, prog, args...], "
        f"[CMD-SHELL, 'command'] or [NONE]; got {test!r}"
    )
