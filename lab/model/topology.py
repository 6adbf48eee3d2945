"""The lab's model: what the compose files declare, with nothing of Docker or namespaces in it.

Both backends realise this model; scenarios and tests read addresses from it, so no address is
ever restated in Python code.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Network:
    """A lab network: its IPv4 subnet, and its IPv6 subnet when it is dual-stack."""

    name: str
    subnet: ipaddress.IPv4Network
    internal: bool = True
    subnet6: ipaddress.IPv6Network | None = None

    @property
    def subnets(self) -> tuple[IPNetwork, ...]:
        """The IPv4 subnet, then the IPv6 one if any."""
        return (self.subnet,) if self.subnet6 is None else (self.subnet, self.subnet6)

    @property
    def dual_stack(self) -> bool:
        return self.subnet6 is not None


@dataclass(frozen=True)
class Attachment:
    """One interface of a node: the network it joins and its static addresses there (IPv4,
    and IPv6 on a dual-stack network when the compose file gives one)."""

    network: str
    address: ipaddress.IPv4Address
    address6: ipaddress.IPv6Address | None = None

    @property
    def addresses(self) -> tuple[IPAddress, ...]:
        """The IPv4 address, then the IPv6 one if any."""
        return (self.address,) if self.address6 is None else (self.address, self.address6)


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

    def attachment(self, network: str) -> Attachment:
        for attachment in self.attachments:
            if attachment.network == network:
                return attachment
        raise KeyError(f"node {self.name!r} has no interface on network {network!r}")

    def address(self, network: str) -> ipaddress.IPv4Address:
        """The node's IPv4 address on network (KeyError if it has no interface there)."""
        return self.attachment(network).address

    def address6(self, network: str) -> ipaddress.IPv6Address:
        """The node's IPv6 address on network (KeyError if it has none there)."""
        address = self.attachment(network).address6
        if address is None:
            raise KeyError(f"node {self.name!r} has no IPv6 address on network {network!r}")
        return address

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
