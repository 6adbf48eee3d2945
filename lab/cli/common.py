"""What every verb shares: progress on stderr (stdout stays for data), the running lab's
backend, paths printed relative to the working directory."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from lab.backends.base import PLACE_ENV, Backend
from lab.model.records import require_current
from lab.run import backend_from

EPILOG_HEADER = "examples:\n"


class Progress:
    """`[  0.42s] message` lines on stderr, the backends' log lines in the same form."""

    def __init__(self, quiet: bool = False) -> None:
        self.start = time.monotonic()
        self.quiet = quiet
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_ElapsedFormatter(self.start))
        root = logging.getLogger("lab")
        root.handlers[:] = [handler]
        root.setLevel(logging.WARNING if quiet else logging.INFO)
        root.propagate = False

    def __call__(self, message: str) -> None:
        if not self.quiet:
            print(f"[{self.elapsed():6.2f}s] {message}", file=sys.stderr, flush=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.start


class _ElapsedFormatter(logging.Formatter):
    def __init__(self, start: float) -> None:
        super().__init__()
        self.start = start

    def format(self, record: logging.LogRecord) -> str:
        return f"[{time.monotonic() - self.start:6.2f}s] {record.getMessage()}"


def current_backend() -> Backend:
    """The backend of the lab `vpnlab up` last brought up (LabError if none is up)."""
    return backend_from(require_current(), warn=logging.getLogger("lab").warning)


def rel(path: Path | str) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def examples(*lines: str) -> dict[str, Any]:
    """add_parser() keywords that show usage examples under --help."""
    return {
        "epilog": EPILOG_HEADER + "\n".join(f"  {line}" for line in lines),
        "formatter_class": argparse.RawDescriptionHelpFormatter,
    }


def duration(text: str) -> float:
    """'2s', '500ms', '1.5' → seconds (an argparse type)."""
    value = text.strip()
    try:
        if value.endswith("ms"):
            return float(value[:-2]) / 1000
        return float(value.removesuffix("s"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 2s, 500ms)") from None


def add_place_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--place",
        action="append",
        default=[],
        metavar="NODE=ENGINE",
        help="on a backend over several engines (swarm): the engine that runs NODE; repeatable",
    )


def apply_places(places: list[str]) -> None:
    """Hand --place down to the backend (the environment: it reaches a fresh process too)."""
    if places:
        os.environ[PLACE_ENV] = ",".join(places)
