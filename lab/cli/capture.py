"""`vpnlab capture SEGMENT [-w FILE|-]`: packets crossing a lab network, as a pcap.

The backend's capture writes the pcap packet by packet (tcpdump -U); this verb follows that file
as it grows and copies each new byte to FILE or stdout, so that `-w -` feeds Wireshark or
`tcpdump -r -` live while traffic flows. It stops after --seconds, on Ctrl-C or SIGTERM, or when
the reader goes away — and the backend's capture is always stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from lab.cli.common import Progress, current_backend, examples, rel
from lab.model import LabError
from lab.pcap import count_packets

POLL = 0.05


def register(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    capture = verbs.add_parser(
        "capture",
        help="capture a network's packets into a pcap, or live to stdout (-w -)",
        description=__doc__,
        **examples(
            "vpnlab capture internet -w - | tcpdump -n -r -",
            "vpnlab capture internet -w - | wireshark -k -i -",
            "vpnlab capture lan -w lan.pcap --seconds 10 --filter icmp",
        ),
    )
    capture.add_argument("segment", metavar="SEGMENT", help="a network of the topology")
    capture.add_argument("-w", dest="write", metavar="FILE|-", help="pcap file, or - for stdout")
    capture.add_argument("--filter", default="", metavar="BPF", help="e.g. 'tcp port 4433'")
    capture.add_argument("--seconds", type=float, help="stop after this long (default: Ctrl-C)")
    capture.set_defaults(func=cmd_capture)


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """SIGTERM as Ctrl-C, so that `timeout` or a supervisor stops the capture cleanly."""

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def follow(source: Path, sink: BinaryIO, until: float | None) -> int:
    """Copy source to sink as it grows, until the deadline (None: until interrupted); bytes."""
    copied = 0
    with source.open("rb") as fh:
        while until is None or time.monotonic() < until:
            chunk = fh.read(65536)
            if chunk:
                sink.write(chunk)
                sink.flush()
                copied += len(chunk)
            else:
                time.sleep(POLL)
        time.sleep(POLL)
        rest = fh.read()
        sink.write(rest)
        sink.flush()
    return copied + len(rest)


def cmd_capture(args: argparse.Namespace) -> int:
    progress = Progress()
    backend = current_backend()
    name = f"{args.segment}-{time.strftime('%H%M%S')}"
    until = time.monotonic() + args.seconds if args.seconds is not None else None
    to_stdout = args.write == "-"
    if to_stdout and sys.stdout.isatty():
        raise LabError("-w -: stdout is a terminal; pipe it (| tcpdump -n -r -) or give -w FILE")
    with _stop_on_sigterm(), backend.capture(args.segment, name, args.filter) as capture:
        where = "stdout" if to_stdout else rel(args.write or capture.path)
        stop = f"for {args.seconds:g} s" if until is not None else "until Ctrl-C"
        progress(f"capturing on {args.segment} {stop} → {where}")
        if args.write is None:
            _wait(until)
            sink_path = capture.path
        else:
            sink = sys.stdout.buffer if to_stdout else open(args.write, "wb")  # noqa: SIM115
            try:
                follow(capture.path, sink, until)
            except (KeyboardInterrupt, BrokenPipeError):
                pass
            finally:
                if not to_stdout:
                    sink.close()
            sink_path = capture.path if to_stdout else Path(args.write)
    if to_stdout:
        with contextlib.suppress(BrokenPipeError, ValueError):
            sys.stdout.flush()
    progress(f"{count_packets(capture.path)} packets captured ({rel(sink_path)})")
    return 0


def _wait(until: float | None) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        while until is None or time.monotonic() < until:
            time.sleep(POLL)
