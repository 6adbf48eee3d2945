"""The lab on Linux network namespaces: no Docker, the same topology, up in a fraction of a second.

Layout of a run with prefix P (`vl` + run id):
- one namespace `P-NODE` per node, interfaces eth0, eth1… in the order of its networks;
- one namespace `P-lab` holding a bridge `Pb<i>` per network and the bridge-side veth ends
  `Pn<node>e<if>`. The host's own namespace is never touched: with br_netfilter loaded, Docker's
  iptables rules there would drop bridged traffic.

Everything created is written to workdir/state.json before it exists, so `down` — from this
object or from a fresh process after a crash — removes all of it.

Each responsibility is a module of this package; this one puts them together.
"""

from __future__ import annotations

from lab.backends.netns.lifecycle import NetnsLifecycle
from lab.backends.netns.network import NetnsNetworking


class NetnsBackend(NetnsLifecycle, NetnsNetworking):
    """Realises the topology with namespaces, veth pairs and bridges."""
