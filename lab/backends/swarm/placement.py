"""Which engine of the swarm runs each node: pure, so it is tested without any engine.

In order: `--place NODE=ENGINE` (vpnlab up/scenario run; $VPNLAB_PLACE), the node's compose label
`vpnlab.place: ENGINE`, else the default — the gateway and every other non-client node on the
first engine (the LAN stays on one engine, as a site does), clients spread over the engines
starting with the second, so one client and its gateway are always on different engines.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from lab.backends.base import PLACE_ENV
from lab.model import LabError, Topology

PLACE_LABEL = "vpnlab.place"


def parse_places(text: str) -> dict[str, str]:
    """ "client=worker1,client2=manager" → {"client": "worker1", "client2": "manager"}."""
    places: dict[str, str] = {}
    for item in (part.strip() for part in text.replace(" ", ",").split(",")):
        if not item:
            continue
        node, sep, engine = item.partition("=")
        if not sep or not node or not engine:
            raise LabError(f"placement {item!r}: write NODE=ENGINE, e.g. client=worker1")
        places[node] = engine
    return places


def requested_places() -> dict[str, str]:
    """The --place choices handed down through $VPNLAB_PLACE."""
    return parse_places(os.environ.get(PLACE_ENV, ""))


def place(
    topology: Topology, engines: Sequence[str], overrides: Mapping[str, str] | None = None
) -> dict[str, str]:
    """node → engine name for every node of topology."""
    if not engines:
        raise LabError("the swarm has no engine to place nodes on")
    overrides = dict(overrides or {})
    unknown_nodes = sorted(set(overrides) - set(topology.nodes))
    if unknown_nodes:
        raise LabError(
            f"--place names no node of the lab: {', '.join(unknown_nodes)}; "
            f"nodes: {', '.join(sorted(topology.nodes))}"
        )
    placed: dict[str, str] = {}
    spread = 1 % len(engines)
    for node in topology.nodes.values():
        chosen = overrides.get(node.name) or node.labels.get(PLACE_LABEL)
        if chosen is None:
            if node.labels.get("vpnlab.role") == "client":
                chosen = engines[spread]
                spread = (spread + 1) % len(engines)
            else:
                chosen = engines[0]
        if chosen not in engines:
            raise LabError(
                f"node {node.name} is placed on engine {chosen!r}, which the swarm does not "
                f"have; engines: {', '.join(engines)}"
            )
        placed[node.name] = chosen
    return placed
