"""`python -m lab up|down|exec|status|capture`: the lab by hand (`make up`, `make down`).

`up` leaves the lab running and writes .cache/lab/current.json (backend, run id, workdir,
compose files) so that later commands — in other processes — find it; each lab also keeps
its own record, .cache/lab/RUN/lab.json, which `down --all` reads (lab.model.records). This
module only parses the command line and prints.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from lab.backends.base import Backend
from lab.backends.registry import BACKENDS
from lab.model import LabError
from lab.model.compose import default_files, load
from lab.model.records import (
    REPO_ROOT,
    Record,
    all_records,
    current_record,
    forget,
    make_current,
    require_current,
    state_dir,
)
from lab.pcap import count_packets
from lab.run import backend_from, new_lab


class Progress:
    """Prints `[  0.42s] message` lines, and the backends' log lines in the same form."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(_ElapsedFormatter(self.start))
        root = logging.getLogger("lab")
        root.handlers[:] = [handler]
        root.setLevel(logging.INFO)
        root.propagate = False

    def __call__(self, message: str) -> None:
        print(f"[{time.monotonic() - self.start:6.2f}s] {message}", flush=True)


class _ElapsedFormatter(logging.Formatter):
    def __init__(self, start: float) -> None:
        super().__init__()
        self.start = start

    def format(self, record: logging.LogRecord) -> str:
        return f"[{time.monotonic() - self.start:6.2f}s] {record.getMessage()}"


def _backend(record: Record) -> Backend:
    return backend_from(record, warn=logging.getLogger("lab").warning)


# -- verbs ------------------------------------------------------------------------------------
def cmd_up(args: argparse.Namespace) -> int:
    progress = Progress()
    running = current_record()
    if running is not None:
        raise LabError(
            f"a lab is already up (run {running['run_id']}, {running['backend']} backend): "
            "make down first"
        )
    backend, record = new_lab(args.backend, args.extra)
    topology = backend.topology
    progress(
        f"topology: {len(topology.nodes)} nodes, {len(topology.networks)} networks "
        f"from {', '.join(_rel(f) for f in record['files'])}"
    )
    make_current(record)
    progress(f"bringing the lab up with the {backend.name} backend (run {backend.run_id})")
    try:
        backend.up()
    except BaseException:
        backend.down()
        forget(record)
        raise
    progress(f"lab up — workdir {_rel(backend.workdir)}; `make down` to remove it")
    _print_status(backend)
    return 0


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
        _backend(record).down()
        forget(record)
    progress(f"down: {len(records)} lab(s) removed")
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise LabError("no command: python -m lab exec NODE -- CMD ARGS...")
    backend = _backend(require_current())
    result = backend.exec(args.node, argv, timeout=args.timeout)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.returncode


def cmd_status(args: argparse.Namespace) -> int:
    record = require_current()
    print(f"run {record['run_id']} · {record['backend']} backend · workdir {record['workdir']}")
    _print_status(_backend(record))
    return 0


def _print_status(backend: Backend) -> None:
    for node in backend.topology.nodes.values():
        try:
            state = (
                "up" if backend.exec(node.name, ["true"], timeout=10).returncode == 0 else "down"
            )
        except LabError:
            state = "down"
        addresses = []
        for attachment in node.attachments:
            try:
                ifname = backend.interface(node.name, attachment.network) if state == "up" else "-"
            except LabError:
                ifname = "?"
            addresses.append(f"{attachment.network}={attachment.address} ({ifname})")
        print(f"  {node.name:<10} {state:<5} {'  '.join(addresses)}")


def cmd_capture(args: argparse.Namespace) -> int:
    progress = Progress()
    backend = _backend(require_current())
    name = args.name or f"{args.network}-{time.strftime('%H%M%S')}"
    with backend.capture(args.network, name, args.filter) as capture:
        progress(f"capturing on {args.network} for {args.seconds:g} s → {_rel(capture.path)}")
        time.sleep(args.seconds)
    progress(f"{count_packets(capture.path)} packets in {_rel(capture.path)}")
    return 0


def _rel(path: Path | str) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# -- parser -----------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m lab", description=__doc__.split("\n")[0])
    verbs = top.add_subparsers(dest="verb", required=True, metavar="VERB")

    up = verbs.add_parser("up", help="bring the lab up and leave it running")
    up.add_argument("--backend", choices=list(BACKENDS), help="default: docker if it answers")
    up.add_argument(
        "--with",
        dest="extra",
        action="append",
        default=[],
        metavar="NAME",
        help="add compose/NAME.yml (e.g. clients); repeatable",
    )
    up.set_defaults(func=cmd_up)

    down = verbs.add_parser("down", help="take the current lab down")
    down.add_argument(
        "--all", action="store_true", help=f"every lab recorded under {_rel(state_dir())}"
    )
    down.set_defaults(func=cmd_down)

    exec_ = verbs.add_parser("exec", help="run a command on a node: exec NODE -- CMD...")
    exec_.add_argument("node")
    exec_.add_argument("argv", nargs=argparse.REMAINDER)
    exec_.add_argument("--timeout", type=float, default=60.0)
    exec_.set_defaults(func=cmd_exec)

    status = verbs.add_parser("status", help="nodes, addresses, up or not")
    status.set_defaults(func=cmd_status)

    capture = verbs.add_parser("capture", help="capture packets on a network into a pcap")
    capture.add_argument("network")
    capture.add_argument("--seconds", type=float, default=10.0)
    capture.add_argument("--name", help="pcap name under WORKDIR/captures (default: NETWORK-time)")
    capture.add_argument("--filter", default="", help="a tcpdump filter, e.g. 'icmp or tcp'")
    capture.set_defaults(func=cmd_capture)

    diagram = verbs.add_parser("diagram", help="draw the topology into docs/topology.svg and .png")
    diagram.add_argument(
        "--with", dest="extra", action="append", default=[], metavar="NAME",
        help="add compose/NAME.yml to the picture (e.g. clients); repeatable",
    )  # fmt: skip
    diagram.add_argument(
        "--out", default=str(REPO_ROOT / "docs" / "topology"), help="path without suffix"
    )
    diagram.set_defaults(func=cmd_diagram)
    return top


def cmd_diagram(args: argparse.Namespace) -> int:
    from lab.diagram import draw

    files = default_files(REPO_ROOT, args.extra)
    topology = load(files, os.environ)
    outputs = [Path(f"{args.out}.svg"), Path(f"{args.out}.png")]
    draw(topology, outputs, title="vpnlab: " + " + ".join(f.name for f in files))
    print("drew " + ", ".join(_rel(p) for p in outputs))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
