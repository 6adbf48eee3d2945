"""The topology as text graphs — Graphviz dot and Mermaid — read straight from the compose
files' Topology (no lab deployed), next to lab/diagram.py's picture."""

from __future__ import annotations

import re

from lab.model import Topology


def _id(name: str) -> str:
    """An identifier both dot and Mermaid accept for a node or network name."""
    return re.sub(r"\W", "_", name)


def _role(labels: dict[str, str]) -> str:
    return labels.get("vpnlab.role", "")


def to_dot(topology: Topology) -> str:
    """Networks as ellipses, nodes as boxes, an edge per interface labelled with its address."""
    lines = ["graph vpnlab {", "  graph [rankdir=LR];", "  node [fontname=Helvetica];"]
    for network in topology.networks.values():
        lines.append(
            f'  net_{_id(network.name)} [shape=ellipse, label="{network.name}\\n{network.subnet}"];'
        )
    for node in topology.nodes.values():
        role = _role(node.labels)
        label = f"{node.name}\\n({role})" if role else node.name
        lines.append(f'  node_{_id(node.name)} [shape=box, label="{label}"];')
        for attachment in node.attachments:
            lines.append(
                f"  node_{_id(node.name)} -- net_{_id(attachment.network)} "
                f'[label="{attachment.address}"];'
            )
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_mermaid(topology: Topology) -> str:
    """A Mermaid flowchart (GitHub renders it in Markdown)."""
    lines = ["graph LR"]
    for network in topology.networks.values():
        lines.append(f'  net_{_id(network.name)}(["{network.name} {network.subnet}"])')
    for node in topology.nodes.values():
        role = _role(node.labels)
        lines.append(f'  node_{_id(node.name)}["{node.name}{f" ({role})" if role else ""}"]')
        for attachment in node.attachments:
            lines.append(
                f"  node_{_id(node.name)} ---|{attachment.address}| net_{_id(attachment.network)}"
            )
    return "\n".join(lines) + "\n"
