"""Draw the topology the compose files declare: networks as buses, nodes as boxes on them.

Read from the same Topology the backends realise, so the picture cannot disagree with the lab.
"""

from __future__ import annotations

from pathlib import Path

from lab.model import Topology

ROLE_COLOURS = {
    "gateway": "#f4c27a",
    "client": "#9cc9f0",
    "host": "#b5e0a8",
    "site-router": "#d9b8f0",
}
POOL_LABELS = ("vpnlab.vpn.pool", "vpnlab.vpn.pool6")  # the gateway's, IPv4 and IPv6
NETWORK_COLOURS = ["#2b6cb0", "#2f855a", "#9c4221", "#6b46c1"]


def draw(topology: Topology, outputs: list[Path], title: str = "vpnlab topology") -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    networks = list(topology.networks)
    row = {name: -3.0 * i for i, name in enumerate(networks)}
    nodes = sorted(
        topology.nodes.values(),
        key=lambda n: (min(networks.index(a.network) for a in n.attachments), -len(n.attachments)),
    )
    width = max(len(nodes) * 2.2, 8)
    fig, ax = plt.subplots(figsize=(width, 2.2 + 2.4 * len(networks)))
    spans: dict[str, list[float]] = {name: [] for name in networks}
    for index, node in enumerate(nodes):
        x = 1.2 + index * 2.2
        ys = [row[a.network] for a in node.attachments]
        y = sum(ys) / len(ys) + (1.3 if len(ys) == 1 else 0.0)
        for attachment in node.attachments:
            spans[attachment.network].append(x)
            ax.plot([x, x], [y, row[attachment.network]], color="#555", lw=1.2, zorder=1)
            offset = 0.45 if row[attachment.network] < y else -0.45
            addresses = "\n".join(str(a) for a in attachment.addresses)  # IPv4, then IPv6
            ax.text(x + 0.08, row[attachment.network] + offset, addresses,
                    fontsize=7.5, color="#333", va="center")  # fmt: skip
        colour = ROLE_COLOURS.get(node.labels.get("vpnlab.role", ""), "#e2e8f0")
        ax.add_patch(FancyBboxPatch((x - 0.85, y - 0.35), 1.7, 0.7, boxstyle="round,pad=0.05",
                                    fc=colour, ec="#333", zorder=2))  # fmt: skip
        ax.text(x, y, node.name, ha="center", va="center", fontsize=10, weight="bold", zorder=3)
        pools = [node.labels[k] for k in POOL_LABELS if k in node.labels]
        if pools:
            ax.text(x, y - 0.6, f"VPN pool {', '.join(pools)}", ha="center",
                    fontsize=7.5, style="italic", zorder=3)  # fmt: skip
    for i, name in enumerate(networks):
        # Every bus spans the picture: its label (both subnets) sits at the right end, clear of
        # the addresses, which the nodes on the left (those on two networks) write under it.
        colour = NETWORK_COLOURS[i % len(NETWORK_COLOURS)]
        ax.plot([0.3, width - 0.3], [row[name]] * 2, color=colour, lw=4, zorder=0)
        network = topology.networks[name]
        subnets = "  ".join(str(s) for s in network.subnets)
        label = f"{name}  {subnets}" + ("  (internal)" if network.internal else "")
        ax.text(width - 0.3, row[name] - 0.45, label, color=colour, fontsize=10, weight="bold",
                ha="right")  # fmt: skip
    ax.set_title(title)
    ax.set_xlim(0, width)
    ax.set_ylim(min(row.values()) - 1.2, 2.4)
    ax.axis("off")
    fig.tight_layout()
    for path in outputs:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    plt.close(fig)
