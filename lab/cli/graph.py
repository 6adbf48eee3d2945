"""`vpnlab graph`: the topology drawn from the compose files alone — nothing is deployed."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from lab.cli.common import examples, rel
from lab.graph import to_dot, to_mermaid
from lab.model.compose import default_files, load
from lab.model.records import REPO_ROOT

TEXT_FORMATS = {"dot": to_dot, "mermaid": to_mermaid}
PICTURE_FORMATS = ("svg", "png")


def register(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    graph = verbs.add_parser(
        "graph",
        aliases=["diagram"],
        help="draw the topology from compose/*.yml (svg, png, dot, mermaid)",
        description=__doc__,
        **examples(
            "vpnlab graph --format mermaid",
            "vpnlab graph --format dot | dot -Tpdf > lab.pdf",
            "vpnlab graph --format svg -o docs/topology.svg --with clients",
        ),
    )
    graph.add_argument("--format", choices=[*PICTURE_FORMATS, *TEXT_FORMATS], default="mermaid")
    graph.add_argument(
        "--with",
        dest="extra",
        type=lambda s: [x for x in s.split(",") if x],
        action="extend",
        default=[],
        metavar="NAME[,NAME]",
        help="add compose/NAME.yml to the picture",
    )
    graph.add_argument(
        "-o", "--output", help="file to write (default: stdout; svg/png: docs/topology.FORMAT)"
    )
    graph.set_defaults(func=cmd_graph)


def cmd_graph(args: argparse.Namespace) -> int:
    files = default_files(REPO_ROOT, args.extra)
    topology = load(files, os.environ)
    if args.format in TEXT_FORMATS:
        text = TEXT_FORMATS[args.format](topology)
        if args.output:
            Path(args.output).write_text(text)
        else:
            sys.stdout.write(text)
        return 0
    from lab.diagram import draw

    output = Path(args.output or REPO_ROOT / "docs" / f"topology.{args.format}")
    draw(topology, [output], title="vpnlab: " + " + ".join(f.name for f in files))
    print(f"drew {rel(output)}", file=sys.stderr)
    return 0
