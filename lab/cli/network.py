"""`vpnlab impair NODE:IFACE …` and `vpnlab link NODE:IFACE down|up|flap`: a bad or broken
link at run time, on either backend (lab.impair does the work; the backend pulls the cable)."""

from __future__ import annotations

import argparse
import time

from lab import impair
from lab.cli.common import Progress, current_backend, duration, examples
from lab.model import LabError


def register(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    imp = verbs.add_parser(
        "impair",
        help="rate, loss, delay, jitter, duplication, corruption on a node's link",
        description=impair.__doc__,
        **examples(
            "vpnlab impair client:internet --rate 10mbit --loss 2%",
            "vpnlab impair client:eth0 --delay 50ms --jitter 10ms   # needs sch_netem",
            "vpnlab impair client:internet --clear",
        ),
    )
    imp.add_argument("link", metavar="NODE:IFACE", help="an interface or a network of the node")
    imp.add_argument("--rate", help="egress rate limit, tc syntax (10mbit): tc tbf")
    imp.add_argument("--loss", help="random loss each way (2%%): iptables statistic")
    imp.add_argument("--delay", help="added delay (50ms): netem")
    imp.add_argument("--jitter", help="delay variation (10ms): netem")
    imp.add_argument("--duplicate", help="duplicated packets (1%%): netem")
    imp.add_argument("--corrupt", help="corrupted packets (0.1%%): netem")
    imp.add_argument("--clear", action="store_true", help="remove every impairment there")
    imp.set_defaults(func=cmd_impair)

    link = verbs.add_parser(
        "link",
        help="pull a node's cable (down), plug it back (up), or flap it",
        **examples(
            "vpnlab link client:internet down",
            "vpnlab link client:eth0 flap --period 2s --count 5",
        ),
    )
    link.add_argument("link", metavar="NODE:IFACE", help="an interface or a network of the node")
    link.add_argument("action", choices=["down", "up", "flap"])
    link.add_argument("--period", type=duration, default=2.0, help="flap: down+up cycle (2s)")
    link.add_argument("--count", type=int, default=3, help="flap: how many cycles (3)")
    link.set_defaults(func=cmd_link)


def cmd_impair(args: argparse.Namespace) -> int:
    progress = Progress()
    backend = current_backend()
    node, network, interface = impair.resolve(backend.topology, backend, args.link)
    settings = {
        key: getattr(args, key)
        for key in ("rate", "loss", "delay", "jitter", "duplicate", "corrupt")
    }
    if args.clear:
        impair.clear(backend, node, interface)
        impair.remember(backend, node, interface, None)
        progress(f"{node}:{interface} ({network}): impairments removed")
        return 0
    wanted = impair.parse(settings)
    if not wanted.as_dict():
        raise LabError("nothing to do: give --rate, --loss, … or --clear")
    impair.apply(backend, node, interface, wanted)
    impair.remember(backend, node, interface, wanted)
    progress(f"{node}:{interface} ({network}): {wanted.describe()}")
    return 0


def cmd_link(args: argparse.Namespace) -> int:
    progress = Progress()
    backend = current_backend()
    node, network, interface = impair.resolve(backend.topology, backend, args.link)
    if args.action == "down":
        backend.link_down(node, network)
    elif args.action == "up":
        backend.link_up(node, network)
    else:
        half = args.period / 2
        for cycle in range(1, args.count + 1):
            backend.link_down(node, network)
            progress(f"{node}:{interface} down ({cycle}/{args.count})")
            try:
                time.sleep(half)
            finally:
                backend.link_up(node, network)
            progress(f"{node}:{interface} up ({cycle}/{args.count})")
            time.sleep(half)
        return 0
    progress(f"{node}:{interface} ({network}) {args.action}")
    return 0
