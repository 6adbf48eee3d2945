"""A lab for the length of a with-block: what scenarios, tests and the benchmark use.

Each run gets its own id and work directory with a record (lab.json) written before anything is
created, so `make down` (`python -m lab down --all`) can remove what a crashed run left.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence

from lab.backend import Backend
from lab.cli import REPO_ROOT, _write_json, state_dir
from lab.select import default_backend_name, make_backend, new_run_id
from lab.topology import default_files, load


@contextlib.contextmanager
def running_lab(
    backend_name: str | None = None,
    extra: Sequence[str] = (),
    *,
    keep: bool = False,
    progress: Callable[[str], None] = lambda _: None,
) -> Iterator[Backend]:
    """Bring the lab up (compose/lab.yml plus `extra` files), yield its backend, take it down."""
    name = backend_name or default_backend_name()
    files = default_files(REPO_ROOT, extra)
    run_id = new_run_id()
    workdir = state_dir() / run_id
    topology = load(files, {**os.environ, "VPNLAB_WORKDIR": str(workdir)})
    record = {
        "backend": name,
        "run_id": run_id,
        "workdir": str(workdir),
        "files": [str(f) for f in files],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    _write_json(workdir / "lab.json", record)
    backend = make_backend(name, topology, run_id, workdir)
    started = time.monotonic()
    progress(f"lab up: {name} backend, run {run_id}, {len(topology.nodes)} nodes")
    try:
        backend.up()
        progress(f"lab ready in {time.monotonic() - started:.1f} s")
        yield backend
    finally:
        if keep:
            progress(f"lab kept (run {run_id}); remove it with `make down`")
            _write_json(state_dir() / "current.json", record)
        else:
            backend.down()
            (workdir / "lab.json").unlink(missing_ok=True)
