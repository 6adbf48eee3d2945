"""Swarm backend: the same compose topology spread over the engines of a Docker swarm.

Networks are attachable overlays (VXLAN between engines) with the compose subnets; nodes are
standalone containers — services cannot map /dev/net/tun — each on the engine its placement
names. Commands, spawned programs, sysctls and interface lookups are the Docker backend's,
acting through the client of the engine that owns each container; only lifecycle, captures and
cable cuts (in the engines' overlay namespaces) are the swarm's own.
"""

from __future__ import annotations

from lab.backends.docker.backend import DockerBackend
from lab.backends.swarm.lifecycle import SwarmLifecycle
from lab.backends.swarm.network import SwarmNetworking


class SwarmBackend(SwarmLifecycle, SwarmNetworking, DockerBackend):
    """Containers of run `vpnlab-<run_id>` on every engine of the swarm; workdir is /lab."""
