"""A netns lab's network verbs: interfaces found by address through netlink, sysctls, cables
pulled at the bridge end of a veth, captures on a network's bridge in the lab namespace.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import Any

from lab.backends.base import Capture
from lab.backends.netns.kernel import NETNS_DIR, write_sysctls
from lab.backends.netns.nodes import NetnsNodes
from lab.backends.tcpdump import tcpdump
from lab.model import LabError

log = logging.getLogger("lab.backends.netns")


class NetnsNetworking(NetnsNodes):
    """The netns backend's network verbs: interface, set_sysctl, cutting links, capture."""

    def _node_link(self, node: str, network: str) -> dict[str, Any]:
        """The kernel's record of the link carrying node's address on network."""
        from pyroute2 import IPRoute

        try:
            address = str(self.topology.node(node).address(network))
        except KeyError as exc:
            raise LabError(exc.args[0]) from None
        self._argv(node, ["true"])  # the namespace exists
        with IPRoute(netns=self.namespace(node)) as ipr:
            found = ipr.get_addr(family=socket.AF_INET, address=address)
            if not found:
                raise LabError(
                    f"node {node} has no interface with its {network} address {address} "
                    f"(did something remove it?)"
                )
            link = ipr.get_links(found[0]["index"])[0]
            return {"ifname": link.get("ifname"), "peer": link.get("link")}

    def interface(self, node: str, network: str) -> str:
        return str(self._node_link(node, network)["ifname"])

    def _set_link(self, node: str, network: str, state: str) -> None:
        from pyroute2 import IPRoute

        peer = self._node_link(node, network)["peer"]
        bridge = self._bridge(network)
        with IPRoute(netns=self.lab_ns) as lab:
            links = lab.get_links(peer) if peer else []
            bridge_index = lab.link_lookup(ifname=bridge)
            if not links or not bridge_index or links[0].get("master") != bridge_index[0]:
                raise LabError(
                    f"cannot find the bridge side of {node}'s {network} link in {self.lab_ns}"
                )
            lab.link("set", index=peer, state=state)
        log.info("link %s:%s %s", node, network, state)

    def _write_sysctl(self, node: str, key: str, value: str) -> None:
        write_sysctls(self.namespace(node), {key: value})

    @contextlib.contextmanager
    def capture(self, network: str, name: str, bpf: str = "") -> Iterator[Capture]:
        bridge = self._bridge(network)
        if not (NETNS_DIR / self.lab_ns).exists():
            raise LabError(f"the lab is not up (no namespace {self.lab_ns})")
        path = self.workdir / "captures" / f"{name}.pcap"
        with tcpdump(
            bridge,
            path,
            bpf,
            prefix=("ip", "netns", "exec", self.lab_ns),
            started=lambda pid: self._record.add_pid(pid, self.lab_ns, f"capture.{name}"),
            stopped=self._record.drop_pid,
        ):
            yield Capture(network=network, path=path)
