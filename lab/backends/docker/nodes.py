"""Where a run's things are on the engine: its containers, networks and bridges, found by the
compose project's labels. The other parts of the Docker backend build on these lookups.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import docker

from lab.backends.base import Backend
from lab.backends.docker.engine import (
    NETWORK,
    PROJECT,
    SERVICE,
    engine,
    project_name,
    project_networks,
)
from lab.model import LabError, Topology

if TYPE_CHECKING:
    from docker.models.containers import Container
    from docker.models.networks import Network as DockerNetwork

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class DockerNodes(Backend):
    """Nodes are containers of the compose project `vpnlab-<run_id>`; workdir is /lab in each."""

    name = "docker"

    def __init__(
        self,
        topology: Topology,
        run_id: str,
        workdir: Path,
        *,
        health_timeout: float = 60.0,
        wait_for_other: float = 900.0,
        client: docker.DockerClient | None = None,
    ) -> None:
        """health_timeout: how long up() waits for the nodes; wait_for_other: how long it waits
        for another process's lab on the same subnets to go (one lab fits on an engine); client:
        the engine to use (default: the one $DOCKER_HOST names, made on first use)."""
        super().__init__(topology, run_id, workdir)
        self.project = project_name(run_id)
        self.health_timeout = health_timeout
        self.wait_for_other = wait_for_other
        self._client = client
        self._compose: list[str] | None = None
        self._containers: dict[str, Container] = {}
        self._interfaces: dict[tuple[str, str], str] = {}

    def container(self, node: str) -> Container:
        """The SDK object of node's container (for inspection beyond the Backend verbs)."""
        self.topology.node(node)  # a KeyError that lists the nodes, for a typo
        if node not in self._containers:
            found = self.engine().containers.list(
                all=True, filters={"label": [f"{PROJECT}={self.project}", f"{SERVICE}={node}"]}
            )
            if not found:
                raise LabError(
                    f"node {node} has no container in lab {self.project}: is the lab up? "
                    "(`make up`)"
                )
            self._containers[node] = found[0]
        return self._containers[node]

    def engine(self) -> docker.DockerClient:
        if self._client is None:
            self._client = engine()
        return self._client

    def bridge(self, network: str) -> str:
        """The host bridge of a lab network (where capture listens)."""
        net = self._network(network)
        options = net.attrs.get("Options") or {}
        return options.get("com.docker.network.bridge.name") or f"br-{net.id[:12]}"

    def _network(self, network: str) -> DockerNetwork:
        self.topology.network(network)  # a KeyError that lists the networks
        for net in self._project_networks(self.engine()):
            labels = net.attrs.get("Labels") or {}
            if labels.get(NETWORK) == network or net.name == f"{self.project}_{network}":
                return net
        raise LabError(f"network {network} of lab {self.project} does not exist: is the lab up?")

    def _project_networks(self, client: docker.DockerClient) -> list[DockerNetwork]:
        return project_networks(client, self.project)
