"""`python -m lab up|down|exec|status|capture`: the lab by hand (`make up`, `make down`).

`up` leaves the lab running and writes .cache/lab/current.json (backend, run id, workdir,
compose files) so that later commands — in other processes — find it; each lab also keeps
its own record, .cache/lab/RUN/lab.json, which `down --all` reads.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import struct
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lab.backend import Backend, LabError
from lab.model import Topology
from lab.run import REPO_ROOT, new_lab, state_dir, write_json
from lab.select import BACKENDS, make_backend
from lab.topology import default_files, load


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


# -- records -----------------------------------------------------------------------------------
def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise LabError(f"{path} is not valid JSON ({exc}): remove it by hand") from None


def current_record() -> dict[str, Any] | None:
    """The lab `up` last brought up, if its own record still exists."""
    record = _read_json(state_dir() / "current.json")
    if record is None or not (Path(record["workdir"]) / "lab.json").exists():
        return None
    return record


def require_current() -> dict[str, Any]:
    record = current_record()
    if record is None:
        raise LabError(f"no lab is up (no record in {state_dir()}): start one with make up")
    return record


def backend_from(record: dict[str, Any]) -> Backend:
    """Rebuild the backend object of a recorded lab, in this (possibly fresh) process."""
    workdir = Path(record["workdir"])
    environ = {**os.environ, "VPNLAB_WORKDIR": str(workdir)}
    try:
        topology = load([Path(f) for f in record["files"]], environ)
    except LabError as exc:
        # The compose files changed since `up`: enough is recorded to take the lab down.
        logging.getLogger("lab").warning("topology unreadable (%s); using the record only", exc)
        topology = Topology(networks={}, nodes={}, files=tuple(record["files"]))
    return make_backend(record["backend"], topology, record["run_id"], workdir)


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
    write_json(state_dir() / "current.json", record)
    progress(f"bringing the lab up with the {backend.name} backend (run {backend.run_id})")
    try:
        backend.up()
    except BaseException:
        backend.down()
        _forget(record)
        raise
    progress(f"lab up — workdir {_rel(backend.workdir)}; `make down` to remove it")
    _print_status(backend)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    progress = Progress()
    if args.all:
        records = [r for p in sorted(state_dir().glob("*/lab.json")) if (r := _read_json(p))]
    else:
        record = current_record()
        records = [record] if record else []
    if not records:
        progress("no lab is up: nothing to take down")
        return 0
    for record in records:
        progress(f"taking down run {record['run_id']} ({record['backend']} backend)")
        backend_from(record).down()
        _forget(record)
    progress(f"down: {len(records)} lab(s) removed")
    return 0


def _forget(record: dict[str, Any]) -> None:
    (Path(record["workdir"]) / "lab.json").unlink(missing_ok=True)
    current = _read_json(state_dir() / "current.json")
    if current is not None and current.get("run_id") == record["run_id"]:
        (state_dir() / "current.json").unlink(missing_ok=True)


def cmd_exec(args: argparse.Namespace) -> int:
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise LabError("no command: python -m lab exec NODE -- CMD ARGS...")
    backend = backend_from(require_current())
    result = backend.exec(args.node, argv, timeout=args.timeout)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.returncode


def cmd_status(args: argparse.Namespace) -> int:
    record = require_current()
    print(f"run {record['run_id']} · {record['backend']} backend · workdir {record['workdir']}")
    _print_status(backend_from(record))
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
    backend = backend_from(require_current())
    name = args.name or f"{args.network}-{time.strftime('%H%M%S')}"
    with backend.capture(args.network, name, args.filter) as capture:
        progress(f"capturing on {args.network} for {args.seconds:g} s → {_rel(capture.path)}")
        time.sleep(args.seconds)
    progress(f"{count_packets(capture.path)} packets in {_rel(capture.path)}")
    return 0


def count_packets(path: Path) -> int:
    """Records in a pcap file (classic format, either byte order)."""
    data = path.read_bytes()
    if len(data) < 24:
        return 0
    order = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    count, offset = 0, 24
    while offset + 16 <= len(data):
        (length,) = struct.unpack_from(order + "I", data, offset + 8)
        offset += 16 + length
        count += 1
    return count


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
