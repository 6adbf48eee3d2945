"""The topology as text graphs — Graphviz dot and Mermaid — read straight from the compose
files' Topology (no lab deployed), next to lab/diagram.py's picture."""

from __future__ import annotations

import re

from lab.model import Attachment, Network, Topology

DOT_BREAK = "\\n"  # a line break inside a dot label


def _id(name: str) -> str:
    """An identifier both dot and Mermaid accept for a node or network name."""
    return re.sub(r"\W", "_", name)


def _role(labels: dict[str, str]) -> str:
    return labels.get("vpnlab.role", "")


def _subnets(network: Network, sep: str) -> str:
    """The network's subnets, IPv4 then IPv6, joined by sep."""
    return sep.join(str(s) for s in network.subnets)


def _addresses(attachment: Attachment, sep: str) -> str:
    """The interface's addresses, IPv4 then IPv6, joined by sep."""
    return sep.join(str(a) for a in attachment.addresses)


def to_dot(topology: Topology) -> str:
    """Networks as ellipses, nodes as boxes, an edge per interface labelled with its addresses
    (IPv4, and IPv6 on a dual-stack network)."""
    lines = ["graph vpnlab {", "  graph [rankdir=LR];", "  node [fontname=Helvetica];"]
    for network in topology.networks.values():
        lines.append(
            f"  net_{_id(network.name)} [shape=ellipse, "
            f'label="{network.name}\\n{_subnets(network, DOT_BREAK)}"];'
        )
    for node in topology.nodes.values():
        role = _role(node.labels)
        label = f"{node.name}\\n({role})" if role else node.name
        lines.append(f'  node_{_id(node.name)} [shape=box, label="{label}"];')
        for attachment in node.attachments:
            lines.append(
                f"  node_{_id(node.name)} -- net_{_id(attachment.network)} "
                f'[label="{_addresses(attachment, DOT_BREAK)}"];'
            )
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_mermaid(topology: Topology) -> str:
    """A Mermaid flowchart (GitHub renders it in Markdown)."""
    lines = ["graph LR"]
    for network in topology.networks.values():
        lines.append(f'  net_{_id(network.name)}(["{network.name} {_subnets(network, " ")}"])')
    for node in topology.nodes.values():
        role = _role(node.labels)
        lines.append(f'  node_{_id(node.name)}["{node.name}{f" ({role})" if role else ""}"]')
        for attachment in node.attachments:
            lines.append(
                f'  node_{_id(node.name)} ---|"{_addresses(attachment, " ")}"| '
                f"net_{_id(attachment.network)}"
            )
    return "\n".join(lines) + "\n"
