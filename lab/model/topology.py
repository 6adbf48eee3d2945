"""The lab's model: what the compose files declare, with nothing of Docker or namespaces in it.

Both backends realise this model; scenarios and tests read addresses from it, so no address is
ever restated in Python code.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Network:
    name: str
    subnet: ipaddress.IPv4Network
    internal: bool = True


@dataclass(frozen=True)
class Attachment:
    """One interface of a node: the network it joins and its static address there."""

    network: str
    address: ipaddress.IPv4Address


@dataclass(frozen=True)
class Node:
    name: str
    attachments: tuple[Attachment, ...]
    sysctls: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    command: tuple[str, ...] = ()
    cap_add: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    healthcheck: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    def address(self, network: str) -> ipaddress.IPv4Address:
        for attachment in self.attachments:
            if attachment.network == network:
                return attachment.address
        raise KeyError(f"node {self.name!r} has no interface on network {network!r}")

    @property
    def networks(self) -> tuple[str, ...]:
        return tuple(a.network for a in self.attachments)


@dataclass(frozen=True)
class Topology:
    networks: dict[str, Network]
    nodes: dict[str, Node]
    files: tuple[str, ...] = ()

    def node(self, name: str) -> Node:
        try:
            return self.nodes[name]
        except KeyError:
            raise KeyError(
                f"no node {name!r} in {', '.join(self.files) or 'the topology'}; "
                f"nodes: {', '.join(sorted(self.nodes))}"
            ) from None

    def network(self, name: str) -> Network:
        try:
            return self.networks[name]
        except KeyError:
            raise KeyError(
                f"no network {name!r}; networks: {', '.join(sorted(self.networks))}"
            ) from None

    def nodes_on(self, network: str) -> list[Node]:
        return [n for n in self.nodes.values() if network in n.networks]
