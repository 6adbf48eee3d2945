"""Swarm backend: the same compose topology spread over the engines of a Docker swarm.

Networks are attachable overlays (VXLAN between engines) with the compose subnets; nodes are
standalone containers — services cannot map /dev/net/tun — each on the engine its placement
names. Commands, spawned programs, sysctls and interface lookups are the Docker backend's,
acting through the client of the engine that owns each container; only lifecycle, captures and
cable cuts (in the engines' overlay namespaces) are the swarm's own.

The overlays are dual-stack as the compose files say, but the engine (Docker 20.10 here) takes
only the IPv4 address of a static endpoint on an overlay and picks the IPv6 one itself, so the
files' IPv6 addresses do not hold: the VPN runs IPv4 only on a swarm lab (`static_ipv6`).
"""

from __future__ import annotations

from lab.backends.docker.backend import DockerBackend
from lab.backends.swarm.lifecycle import SwarmLifecycle
from lab.backends.swarm.network import SwarmNetworking


class SwarmBackend(SwarmLifecycle, SwarmNetworking, DockerBackend):
    """Containers of run `vpnlab-<run_id>` on every engine of the swarm; workdir is /lab."""

    static_ipv6 = False
