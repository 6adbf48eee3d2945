"""`vpnlab up` and `vpnlab down`: a lab that stays up between commands, and is ready when `up`
returns — every node's healthcheck holds, declared impairments are applied, and where the VPN
is started (`--vpn`, or the label `vpnlab.vpn.start: "true"` on a node, as in
compose/vpn-up.yml) the server listens and every client's tunnel is up."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from lab import impair
from lab.backends.base import Backend
from lab.backends.registry import BACKENDS
from lab.cli.common import Progress, add_place_option, apply_places, examples, rel
from lab.model import LabError, Topology
from lab.model.records import all_records, current_record, forget, make_current, state_dir
from lab.run import backend_from, new_lab
from scenarios.tunnel import Tunnel

DEFAULT_WAIT = 60.0
START_LABEL = "vpnlab.vpn.start"


def register(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    up = verbs.add_parser(
        "up",
        help="bring the lab up, ready, and leave it running",
        description=__doc__,
        **examples(
            "vpnlab up --backend netns --wait",
            "vpnlab up --with clients --vpn --wait 90",
        ),
    )
    up.add_argument("--backend", choices=list(BACKENDS), help="default: docker if it answers")
    up.add_argument(
        "--with",
        dest="extra",
        type=lambda s: [x for x in s.split(",") if x],
        action="extend",
        default=[],
        metavar="NAME[,NAME]",
        help="add compose/NAME.yml (e.g. clients,site2); repeatable",
    )
    up.add_argument(
        "--wait",
        nargs="?",
        type=float,
        const=DEFAULT_WAIT,
        default=None,
        metavar="SECONDS",
        help=f"wait for every node's readiness, a line per node (default {DEFAULT_WAIT:g} s)",
    )
    up.add_argument("--vpn", action="store_true", help="start the VPN server and every client")
    add_place_option(up)
    up.set_defaults(func=cmd_up)

    down = verbs.add_parser(
        "down",
        help="take the current lab down",
        **examples("vpnlab down", "vpnlab down --all   # every lab recorded, also after a crash"),
    )
    down.add_argument(
        "--all", action="store_true", help=f"every lab recorded under {rel(state_dir())}"
    )
    down.set_defaults(func=cmd_down)


def cmd_up(args: argparse.Namespace) -> int:
    progress = Progress()
    running = current_record()
    if running is not None:
        raise LabError(
            f"a lab is already up (run {running['run_id']}, {running['backend']} backend): "
            "vpnlab down first"
        )
    apply_places(args.place)
    backend, record = new_lab(args.backend, args.extra)
    backend.kept = True  # it outlives this command: `vpnlab down` removes it
    topology = backend.topology
    progress(
        f"topology: {len(topology.nodes)} nodes, {len(topology.networks)} networks "
        f"from {', '.join(rel(f) for f in record['files'])}"
    )
    make_current(record)
    progress(f"bringing the lab up with the {backend.name} backend (run {backend.run_id})")
    try:
        backend.up()
        apply_declared_impairments(backend, progress)
        start_vpn = args.vpn or starts_vpn(topology)
        deadline = time.monotonic() + (args.wait if args.wait is not None else DEFAULT_WAIT)
        if args.wait is not None or start_vpn:
            wait_ready(backend, progress, deadline, start_vpn=start_vpn)
    except BaseException:
        backend.down()
        forget(record)
        raise
    progress(f"lab up in {progress.elapsed():.1f} s — `vpnlab inspect`, `vpnlab down`")
    return 0


def starts_vpn(topology: Topology) -> bool:
    """Whether the compose files ask for the VPN at `up` (a node labelled vpnlab.vpn.start)."""
    return any(n.labels.get(START_LABEL) == "true" for n in topology.nodes.values())


def apply_declared_impairments(backend: Backend, progress: Callable[[str], None]) -> None:
    for link, impairment in impair.declared(backend.topology).items():
        node, _network, interface = impair.resolve(backend.topology, backend, link)
        impair.apply(backend, node, interface, impairment)
        impair.remember(backend, node, interface, impairment)
        progress(f"impaired {node}:{interface} ({link}): {impairment.describe()}")


def wait_ready(
    backend: Backend, progress: Callable[[str], None], deadline: float, *, start_vpn: bool
) -> None:
    """A ✓ line per node once its healthcheck passes (and its VPN role is up, with start_vpn)."""
    for node in backend.topology.nodes.values():
        started = time.monotonic()
        while node.healthcheck and backend.exec(node.name, node.healthcheck, timeout=10).returncode:
            if time.monotonic() > deadline:
                raise LabError(
                    f"{node.name}: healthcheck `{' '.join(node.healthcheck)}` still fails"
                )
            time.sleep(0.2)
        progress(f"  ✓ {node.name} ready ({time.monotonic() - started:.1f} s)")
    if start_vpn:
        start_tunnels(backend, progress, deadline)


def start_tunnels(backend: Backend, progress: Callable[[str], None], deadline: float) -> None:
    """The VPN server on the gateway, then every client; returns once each tunnel is up."""
    tunnel = Tunnel(backend)
    started = time.monotonic()
    tunnel.start_server()
    progress(
        f"  ✓ {tunnel.gateway.name}: VPN server listening on "
        f"{tunnel.server_address}:{tunnel.port} ({time.monotonic() - started:.1f} s)"
    )
    for client in tunnel.clients:
        started = time.monotonic()
        tunnel.start_client(client)
        status = tunnel.wait_connected(client, timeout=max(1.0, deadline - time.monotonic()))
        progress(
            f"  ✓ {client}: tunnel up, {status['address']} on {status['tun']} "
            f"({time.monotonic() - started:.1f} s)"
        )


def cmd_down(args: argparse.Namespace) -> int:
    progress = Progress()
    if args.all:
        records = all_records()
    else:
        record = current_record()
        records = [record] if record else []
    if not records:
        progress("no lab is up: nothing to take down")
        return 0
    for record in records:
        progress(f"taking down run {record['run_id']} ({record['backend']} backend)")
        backend_from(record, warn=progress).down()
        forget(record)
    progress(f"down: {len(records)} lab(s) removed")
    return 0
