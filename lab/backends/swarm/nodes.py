"""Where a swarm run's things are: a client per engine, each node's container found on
whichever engine runs it, the overlay networks on the manager. The Docker backend's exec, spawn,
sysctl and interface verbs then work unchanged on these containers: each goes through the
client of the engine that owns the container.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import docker

from lab.backends.docker.engine import PROJECT, SERVICE
from lab.backends.docker.nodes import DockerNodes
from lab.backends.swarm.engines import connect, engine_urls
from lab.model import LabError

if TYPE_CHECKING:
    from docker.models.containers import Container

SWARM_LABEL = "vpnlab.swarm"  # on every container and network a swarm lab makes
ENGINE_LABEL = "vpnlab.engine"  # the engine a node was placed on


class SwarmNodes(DockerNodes):
    """Nodes are standalone containers spread over the swarm's engines, on overlay networks."""

    name = "swarm"
    link_overhead = 50  # VXLAN: outer Ethernet, IP, UDP and VXLAN headers

    _clients: dict[str, docker.DockerClient] | None = None
    _urls: dict[str, str] | None = None

    def engines(self) -> dict[str, docker.DockerClient]:
        """name → client of each engine of the swarm, the manager first (made on first use)."""
        if self._clients is None:
            self._urls = engine_urls()
            self._clients = connect(self._urls)
        return self._clients

    def answering_engines(self) -> dict[str, docker.DockerClient]:
        """The engines that answer now (down() removes what it can reach, also when one is
        gone — its containers went with it)."""
        if self._clients is not None:
            return self._clients
        found = {}
        for name, url in engine_urls().items():
            with contextlib.suppress(LabError):
                found.update(connect({name: url}))
        return found

    def engine_urls(self) -> dict[str, str]:
        self.engines()
        assert self._urls is not None
        return self._urls

    def engine(self) -> docker.DockerClient:
        """The manager's client: overlay networks are made and found there."""
        if self._client is None:
            self._client = next(iter(self.engines().values()))
        return self._client

    def engine_of(self, node: str) -> str:
        """The name of the engine that runs node."""
        return str(self.container(node).labels.get(ENGINE_LABEL, ""))

    def container(self, node: str) -> Container:
        self.topology.node(node)  # a KeyError that lists the nodes, for a typo
        if node not in self._containers:
            wanted = {"label": [f"{PROJECT}={self.project}", f"{SERVICE}={node}"]}
            for client in self.engines().values():
                found = client.containers.list(all=True, filters=wanted)
                if found:
                    self._containers[node] = found[0]
                    break
            else:
                raise LabError(
                    f"node {node} has no container in swarm lab {self.project} on any engine "
                    f"({', '.join(self.engines())}): is the lab up?"
                )
        return self._containers[node]

    def bridge(self, network: str) -> str:
        """An overlay has no host bridge (each engine has one, br0, in its overlay namespace):
        the overlay network's name, which is what `vpnlab inspect` shows."""
        return f"{self._network(network).name} (overlay)"
