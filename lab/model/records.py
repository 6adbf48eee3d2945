"""Records of lab runs: what `up` created, written before it exists, so any later process can
find the lab (.cache/lab/current.json) or every lab (.cache/lab/RUN/lab.json) and take it down.

Plain JSON files; nothing here touches a backend.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lab.model.errors import LabError

REPO_ROOT = Path(__file__).resolve().parents[2]

Record = dict[str, Any]


def state_dir() -> Path:
    """Where lab records live: $VPNLAB_STATE_DIR, else .cache/lab in the repository."""
    return Path(os.environ.get("VPNLAB_STATE_DIR") or REPO_ROOT / ".cache" / "lab")


def write_json(path: Path, data: Record) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def read_json(path: Path, advice: str = "remove it by hand") -> Record | None:
    """The JSON object in path; None if there is no such file."""
    try:
        data: Record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise LabError(f"{path} is not valid JSON ({exc}): {advice}") from None
    return data


def new_record(backend: str, run_id: str, workdir: Path, files: Sequence[Path]) -> Record:
    """The record of a new run, written to workdir/lab.json before anything is created."""
    record: Record = {
        "backend": backend,
        "run_id": run_id,
        "workdir": str(workdir),
        "files": [str(f) for f in files],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json(workdir / "lab.json", record)
    return record


def all_records() -> list[Record]:
    """The record of every lab under state_dir(), oldest run id first."""
    return [r for p in sorted(state_dir().glob("*/lab.json")) if (r := read_json(p))]


def current_record() -> Record | None:
    """The lab `up` last brought up, if its own record still exists."""
    record = read_json(state_dir() / "current.json")
    if record is None or not (Path(record["workdir"]) / "lab.json").exists():
        return None
    return record


def require_current() -> Record:
    record = current_record()
    if record is None:
        raise LabError(f"no lab is up (no record in {state_dir()}): start one with make up")
    return record


def make_current(record: Record) -> None:
    """Mark record as the lab later commands (`exec`, `status`, `down`) act on."""
    write_json(state_dir() / "current.json", record)


def forget(record: Record) -> None:
    """Remove a lab's record, and current.json if it names that lab."""
    (Path(record["workdir"]) / "lab.json").unlink(missing_ok=True)
    current = read_json(state_dir() / "current.json")
    if current is not None and current.get("run_id") == record["run_id"]:
        (state_dir() / "current.json").unlink(missing_ok=True)
