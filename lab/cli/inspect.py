"""`vpnlab inspect [--json]`: the running lab as data — nodes, the backend's names for them,
addresses per network (IPv4, and IPv6 on a dual-stack network), tunnel state (from
`vpn status --json` on each VPN node) and the impairments in force. The JSON's schema is
docs/inspect.schema.json (described in docs/cli.md); its version is SCHEMA_VERSION."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from lab import impair
from lab.backends.base import Backend
from lab.cli.common import current_backend, examples
from lab.model import LabError
from lab.model.records import require_current

SCHEMA_VERSION = 2  # 2: address6 per interface, subnet6 per network
VPN_ROLES = ("gateway", "client", "site-router")


def register(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    inspect = verbs.add_parser(
        "inspect",
        aliases=["status"],
        help="nodes, addresses, tunnel state, impairments (--json: machine-readable)",
        description=__doc__,
        **examples(
            "vpnlab inspect",
            "vpnlab inspect --json | jq '.nodes[] | {name, tunnel: .tunnel.state}'",
        ),
    )
    inspect.add_argument("--json", action="store_true", help="JSON on stdout (schema: docs/)")
    inspect.set_defaults(func=cmd_inspect)


def object_name(backend: Backend, node: str) -> str:
    """What the backend calls node: a container name (Docker), a namespace (netns)."""
    container = getattr(backend, "container", None)
    if callable(container):
        return str(container(node).name)
    namespace = getattr(backend, "namespace", None)
    if callable(namespace):
        return str(namespace(node))
    return node


def network_object(backend: Backend, network: str) -> str:
    """The bridge that carries network (where captures listen)."""
    for attribute in ("bridge", "_bridge"):
        method = getattr(backend, attribute, None)
        if callable(method):
            return str(method(network))
    return network


def tunnel_state(backend: Backend, node: str) -> dict[str, Any] | None:
    """`vpn status --json` on node; None when no VPN process answers there."""
    done = backend.exec(node, [*backend.vpn_argv(), "status", "--json"], timeout=15)
    if done.returncode != 0:
        return None
    try:
        status: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        return None
    return status


def describe(backend: Backend) -> dict[str, Any]:
    """The document `inspect --json` prints."""
    record = require_current()
    forced = impair.in_force(backend)
    nodes = []
    for node in backend.topology.nodes.values():
        try:
            up = backend.exec(node.name, ["true"], timeout=10).returncode == 0
        except LabError:
            up = False
        interfaces = []
        for attachment in node.attachments:
            ifname = backend.interface(node.name, attachment.network) if up else None
            interfaces.append(
                {
                    "network": attachment.network,
                    "address": str(attachment.address),
                    "address6": _text(attachment.address6),
                    "interface": ifname,
                    "impairment": forced.get(f"{node.name}:{ifname}"),
                }
            )
        role = node.labels.get("vpnlab.role", "")
        nodes.append(
            {
                "name": node.name,
                "role": role,
                "object": object_name(backend, node.name),
                "state": "up" if up else "down",
                "interfaces": interfaces,
                "tunnel": tunnel_state(backend, node.name) if up and role in VPN_ROLES else None,
            }
        )
    networks = [
        {
            "name": n.name,
            "subnet": str(n.subnet),
            "subnet6": _text(n.subnet6),
            "object": network_object(backend, n.name),
        }
        for n in backend.topology.networks.values()
    ]
    return {
        "schema": SCHEMA_VERSION,
        "run_id": record["run_id"],
        "backend": record["backend"],
        "workdir": record["workdir"],
        "files": record["files"],
        "networks": networks,
        "nodes": nodes,
        "impairments": [{"link": link, **values} for link, values in forced.items()],
    }


def cmd_inspect(args: argparse.Namespace) -> int:
    document = describe(current_backend())
    if args.json:
        json.dump(document, sys.stdout, indent=2)
        print()
        return 0
    print(f"run {document['run_id']} · {document['backend']} backend · {document['workdir']}")
    for net in document["networks"]:
        subnets = " ".join(filter(None, (net["subnet"], net["subnet6"])))
        print(f"  network {net['name']:<9} {subnets:<32} {net['object']}")
    for node in document["nodes"]:
        addresses = "  ".join(
            f"{i['network']}={','.join(filter(None, (i['address'], i['address6'])))} "
            f"({i['interface'] or '-'})"
            for i in node["interfaces"]
        )
        tunnel = node["tunnel"]
        state = f"  vpn {_tunnel_summary(tunnel)}" if tunnel else ""
        print(f"  {node['name']:<10} {node['state']:<5} {node['object']:<26} {addresses}{state}")
    for item in document["impairments"]:
        values = {k: v for k, v in item.items() if k != "link"}
        print(f"  impaired {item['link']}: {impair.Impairment(**values).describe()}")
    return 0


def _text(value: object | None) -> str | None:
    """str(value), or None for None (JSON null)."""
    return None if value is None else str(value)


def _tunnel_summary(status: dict[str, Any]) -> str:
    if status.get("role") == "server":
        return f"server, {len(status.get('clients') or [])} client(s)"
    return f"{status.get('state', '?')} {status.get('address', '')}".strip()
