"""A lab run: its id, work directory and record, and a lab for the length of a with-block.

Each run gets its own id and work directory with a record (lab.json) written before anything is
created, so `make down` (`python -m lab down --all`) can remove what a crashed run left.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from lab import host_tools
from lab.backends.base import Backend
from lab.backends.registry import default_backend_name, make_backend, new_run_id
from lab.model import LabError, Topology
from lab.model.compose import default_files, load
from lab.model.records import REPO_ROOT, Record, make_current, new_record, state_dir

__all__ = ["REPO_ROOT", "backend_from", "new_lab", "running_lab"]


def new_lab(backend_name: str | None, extra: Sequence[str] = ()) -> tuple[Backend, Record]:
    """A backend for a new run of the lab (compose/lab.yml plus `extra`), its record written."""
    name = backend_name or default_backend_name()
    files = default_files(REPO_ROOT, extra)
    run_id = new_run_id()
    workdir = state_dir() / run_id
    topology = load(files, {**os.environ, "VPNLAB_WORKDIR": str(workdir)})
    backend = make_backend(name, topology, run_id, workdir)
    # Before anything is written: a machine that cannot run this lab (not root, no engine, no
    # /dev/net/tun) gets the one line saying what to do, and no record is left behind.
    backend.preflight()
    host_tools.ensure()
    record = new_record(name, run_id, workdir, files)
    return backend, record


def backend_from(record: Record, warn: Callable[[str], None] = lambda _: None) -> Backend:
    """Rebuild the backend object of a recorded lab, in this (possibly fresh) process."""
    workdir = Path(record["workdir"])
    environ = {**os.environ, "VPNLAB_WORKDIR": str(workdir)}
    try:
        topology = load([Path(f) for f in record["files"]], environ)
    except LabError as exc:
        # The compose files changed since `up`: enough is recorded to take the lab down.
        warn(f"topology unreadable ({exc}); using the record only")
        topology = Topology(networks={}, nodes={}, files=tuple(record["files"]))
    return make_backend(record["backend"], topology, record["run_id"], workdir)


@contextlib.contextmanager
def running_lab(
    backend_name: str | None = None,
    extra: Sequence[str] = (),
    *,
    keep: bool = False,
    progress: Callable[[str], None] = lambda _: None,
) -> Iterator[Backend]:
    """Bring the lab up (compose/lab.yml plus `extra` files), yield its backend, take it down."""
    backend, record = new_lab(backend_name, extra)
    backend.kept = keep
    started = time.monotonic()
    topology = backend.topology
    progress(f"lab up: {backend.name} backend, run {backend.run_id}, {len(topology.nodes)} nodes")
    try:
        backend.up()
        progress(f"lab ready in {time.monotonic() - started:.1f} s")
        yield backend
    finally:
        if keep:
            progress(f"lab kept (run {backend.run_id}); remove it with `make down`")
            make_current(record)
        else:
            backend.down()
            (backend.workdir / "lab.json").unlink(missing_ok=True)
