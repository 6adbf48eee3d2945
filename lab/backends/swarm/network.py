"""A swarm lab's network verbs where an overlay differs from a bridge: there is no host bridge;
each engine has, per overlay network, a namespace holding that network's bridge (br0), its
VXLAN device and the far ends of the local containers' veths. Captures and cable cuts happen
there, entered with nsenter; everything else is the Docker backend's.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from lab.backends.base import Capture
from lab.backends.docker.nodes import NAME
from lab.backends.swarm.nodes import SwarmNodes
from lab.backends.tcpdump import tcpdump
from lab.model import LabError

if TYPE_CHECKING:
    import testinfra.host

OVERLAY_BRIDGE = "br0"


class SwarmNetworking(SwarmNodes):
    """capture, link down/up and testinfra hosts of the swarm backend."""

    def overlay_namespace(self, node: str, network: str) -> Path:
        """The namespace of network's overlay on the engine that runs node: `N-<network id>`
        beside the node's own namespace (its SandboxKey) under that engine's exec root."""
        box = self.container(node)
        box.reload()
        sandbox = (box.attrs.get("NetworkSettings") or {}).get("SandboxKey") or ""
        net_id = self._network(network).id
        found = sorted(Path(sandbox).parent.glob(f"*-{net_id[:10]}")) if sandbox else []
        if not found:
            raise LabError(
                f"no overlay namespace of network {network} beside {node}'s {sandbox or '(none)'}"
                "; is the node running and attached to it?"
            )
        return found[-1]

    def capture_node(self, network: str) -> str:
        """Whose engine a capture of network listens on: the gateway's if it is on the network
        (every tunnel's packets cross it), else the first node's."""
        nodes = self.topology.nodes_on(network)
        if not nodes:
            raise LabError(f"no node is attached to network {network}: nothing to capture")
        gateways = [n for n in nodes if n.labels.get("vpnlab.role") == "gateway"]
        return (gateways or nodes)[0].name

    @contextlib.contextmanager
    def capture(self, network: str, name: str, bpf: str = "") -> Iterator[Capture]:
        if not NAME.fullmatch(name):
            raise LabError(f"capture name {name!r}: use letters, digits, '.', '-' and '_'")
        path = self.workdir / "captures" / f"{name}.pcap"
        namespace = self.overlay_namespace(self.capture_node(network), network)
        with tcpdump(OVERLAY_BRIDGE, path, bpf, prefix=["nsenter", f"--net={namespace}"]):
            yield Capture(network=network, path=path)

    def _set_link(self, node: str, network: str, state: str) -> None:
        """Set the far end of node's veth, in its engine's overlay namespace, down or up."""
        ifname = self.interface(node, network)
        iflink = int(self.ensure(node, ["cat", f"/sys/class/net/{ifname}/iflink"]).strip())
        enter = ["nsenter", f"--net={self.overlay_namespace(node, network)}"]
        listing = subprocess.run(
            [*enter, "ip", "-j", "link", "show"], capture_output=True, text=True
        )
        peers = [
            link["ifname"]
            for link in json.loads(listing.stdout or "[]")
            if link.get("ifindex") == iflink and link.get("master") == OVERLAY_BRIDGE
        ]
        if not peers:
            raise LabError(
                f"the far end of {node}'s {ifname} (ifindex {iflink}) is not a port of "
                f"{OVERLAY_BRIDGE} in network {network}'s overlay namespace"
            )
        argv = [*enter, "ip", "link", "set", "dev", peers[0], state]
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            raise LabError(f"`{shlex.join(argv)}` failed: {done.stderr.strip()} (needs root)")

    def host(self, node: str) -> testinfra.host.Host:
        from lab.backends.swarm.testinfra import get_host

        return get_host(self.container(node).name, self.engine_urls()[self.engine_of(node)])
