"""A lab run: its id, work directory and record, and a lab for the length of a with-block.

Each run gets its own id and work directory with a record (lab.json) written before anything is
created, so `make down` (`python -m lab down --all`) can remove what a crashed run left.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from lab.backend import Backend
from lab.select import default_backend_name, make_backend, new_run_id
from lab.topology import default_files, load

REPO_ROOT = Path(__file__).resolve().parent.parent


def state_dir() -> Path:
    """Where lab records live: $VPNLAB_STATE_DIR, else .cache/lab in the repository."""
    return Path(os.environ.get("VPNLAB_STATE_DIR") or REPO_ROOT / ".cache" / "lab")


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def new_lab(backend_name: str | None, extra: Sequence[str] = ()) -> tuple[Backend, dict[str, Any]]:
    """A backend for a new run of the lab (compose/lab.yml plus `extra`), its record written."""
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
    write_json(workdir / "lab.json", record)
    return make_backend(name, topology, run_id, workdir), record


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
            write_json(state_dir() / "current.json", record)
        else:
            backend.down()
            (backend.workdir / "lab.json").unlink(missing_ok=True)
