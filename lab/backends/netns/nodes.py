"""Names of a netns run's things — a namespace per node, a bridge per network, in one lab
namespace — and what the other parts of the netns backend share.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lab.backends.base import Backend
from lab.backends.netns.kernel import NETNS_DIR, prefix_for
from lab.backends.netns.record import StateRecord
from lab.model import LabError, Topology
from lab.procfs import net_ns, pids_in

if TYPE_CHECKING:
    import testinfra.host


class NetnsNodes(Backend):
    """Realises the topology with namespaces, veth pairs and bridges."""

    name = "netns"
    health_timeout = 20.0  # seconds for every node's healthcheck to pass
    stop_timeout = 2.0  # seconds between SIGTERM and SIGKILL at down

    def __init__(self, topology: Topology, run_id: str, workdir: Path) -> None:
        super().__init__(topology, run_id, Path(workdir))
        self.prefix = prefix_for(run_id)
        self.lab_ns = f"{self.prefix}-lab"
        self._record = StateRecord(self.workdir / "state.json")
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    def namespace(self, node: str) -> str:
        """The namespace of node (raises LabError for a node the topology lacks)."""
        try:
            self.topology.node(node)
        except KeyError as exc:
            raise LabError(exc.args[0]) from None
        return f"{self.prefix}-{node}"

    def _bridge(self, network: str) -> str:
        try:
            index = list(self.topology.networks).index(network)
        except ValueError:
            raise LabError(
                f"no network {network!r}; networks: {', '.join(self.topology.networks)}"
            ) from None
        return f"{self.prefix}b{index}"

    def _namespaces(self) -> list[str]:
        return [self.lab_ns] + [self.namespace(n) for n in self.topology.nodes]

    def _argv(self, node: str, argv: Sequence[str]) -> list[str]:
        ns = self.namespace(node)
        if not (NETNS_DIR / ns).exists():
            raise LabError(f"node {node} is not up (no namespace {ns}): bring the lab up first")
        if not argv:
            raise LabError(f"no command given to run on {node}")
        return ["ip", "netns", "exec", ns, *argv]

    def node_path(self, host_path: Path) -> str:
        return str(host_path)

    def vpn_argv(self) -> list[str]:
        return [sys.executable, "-m", "vpn"]

    def host(self, node: str) -> testinfra.host.Host:
        from lab.backends.netns.testinfra import get_host

        return get_host(self.namespace(node))

    def host_pids(self, node: str) -> list[int]:
        """The processes in node's namespace (its node command, exec'd and spawned programs)."""
        ident = net_ns(NETNS_DIR / self.namespace(node))
        return pids_in({ident}) if ident is not None else []
