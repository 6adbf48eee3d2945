"""workdir/state.json of a netns run: every namespace, directory and process, written before
it exists, so `down` — from the same object or a fresh process after a crash — removes all of it.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from lab.model import LabError
from lab.procfs import net_ns, net_ns_of, start_time


class StateRecord:
    """workdir/state.json: what this run created, written before each thing exists."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._data: dict[str, Any] | None = None

    def exists(self) -> bool:
        return self.path.exists()

    def load(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise LabError(
                f"{self.path} is not valid JSON ({exc}): inspect and remove it"
            ) from None
        return data

    def begin(
        self, backend: str, run_id: str, prefix: str, namespaces: list[str], etc_dirs: list[str]
    ) -> None:
        self._data = {
            "backend": backend,
            "run_id": run_id,
            "prefix": prefix,
            "namespaces": namespaces,
            "etc_dirs": etc_dirs,
            "pids": [],
        }
        self._save()

    def add_pid(self, pid: int, ns: str, name: str) -> None:
        with self._lock:
            if self._data is None:
                self._data = self.load() or {"namespaces": [], "etc_dirs": [], "pids": []}
            self._data["pids"].append(
                {"pid": pid, "start": start_time(pid), "ns": ns, "name": name}
            )
            self._save()

    def drop_pid(self, pid: int) -> None:
        with self._lock:
            if self._data is not None and self.path.exists():
                self._data["pids"] = [p for p in self._data["pids"] if p["pid"] != pid]
                self._save()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._data, indent=1))
        os.replace(tmp, self.path)

    def remove(self) -> None:
        with self._lock:
            self.path.unlink(missing_ok=True)
            self._data = None


def recorded_pids(record: dict[str, Any], namespaces: dict[str, tuple[int, int]]) -> list[int]:
    """The record's processes that still run, in the namespace recorded (namespaces: name →
    identity), with the start time recorded — never a reused pid."""
    return [
        entry["pid"]
        for entry in record.get("pids", [])
        if entry["ns"] in namespaces
        and net_ns_of(entry["pid"]) == namespaces[entry["ns"]]
        and start_time(entry["pid"]) == entry.get("start")
    ]


def namespace_ids(names: list[str], directory: Path) -> dict[str, tuple[int, int]]:
    """name → identity of each namespace in names that still exists under directory."""
    ids = {ns: net_ns(directory / ns) for ns in names}
    return {ns: ident for ns, ident in ids.items() if ident is not None}
