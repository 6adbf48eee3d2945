"""Backends by name: the one place a backend's name is written, and how one is chosen.

Each entry names its class's module, which is imported only when that name is looked up, so the
netns path never imports Docker code (nor needs the Docker SDK installed). Entries are in order
of preference: the default is the first whose probe says this machine can run it.
"""

from __future__ import annotations

import importlib
import os
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from lab.backends.base import Backend
from lab.model import LabError, Topology


@dataclass(frozen=True)
class Entry:
    """Where a backend lives: "module:Class", and optionally "module:function" that answers
    whether it can run here (cheaply, without importing the backend)."""

    cls: str
    probe: str | None = None
    every_e2e: bool = True  # whether every end-to-end test runs on it (tests/e2e/conftest.py)
    default: bool = True  # whether default_backend_name may choose it


ENTRIES: dict[str, Entry] = {
    "docker": Entry(
        "lab.backends.docker.backend:DockerBackend", probe="lab.backends.docker.ping:docker_answers"
    ),
    "netns": Entry("lab.backends.netns.backend:NetnsBackend"),
    # Never the default (it needs a swarm: `make swarm-up`); tests/e2e/test_swarm.py tests it.
    "swarm": Entry("lab.backends.swarm.backend:SwarmBackend", every_e2e=False, default=False),
}


def _load(target: str) -> object:
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


class _Backends(Mapping[str, type[Backend]]):
    """name → Backend class; the class's module is imported on first lookup."""

    def __getitem__(self, name: str) -> type[Backend]:
        cls = _load(ENTRIES[name].cls)
        if not (isinstance(cls, type) and issubclass(cls, Backend)):
            raise LabError(f"registry entry {name!r} ({ENTRIES[name].cls}) is not a Backend")
        return cls

    def __iter__(self) -> Iterator[str]:
        return iter(ENTRIES)

    def __len__(self) -> int:
        return len(ENTRIES)


BACKENDS: Mapping[str, type[Backend]] = _Backends()


def new_run_id() -> str:
    """Six hex digits: short enough for interface names, random enough for parallel runs."""
    return secrets.token_hex(3)


def default_backend_name() -> str:
    """$VPNLAB_BACKEND if set, else the first backend whose probe answers (docker when an
    engine answers), else the first without a probe (netns)."""
    chosen = os.environ.get("VPNLAB_BACKEND")
    if chosen:
        if chosen not in BACKENDS:
            raise LabError(
                f"VPNLAB_BACKEND={chosen!r} is not a backend; choose one of {', '.join(BACKENDS)}"
            )
        return chosen
    for name, entry in ENTRIES.items():
        if not entry.default:
            continue
        if entry.probe is None:
            return name
        probe = _load(entry.probe)
        if callable(probe) and probe():
            return name
    raise LabError(f"no backend can run here; tried {', '.join(ENTRIES)}")


def make_backend(name: str, topology: Topology, run_id: str, workdir: Path) -> Backend:
    """An instance of backend name for this topology and run (nothing is created yet)."""
    if name not in BACKENDS:
        raise LabError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    try:
        cls = BACKENDS[name]
    except ImportError as exc:
        raise LabError(
            f"the {name} backend cannot be loaded ({exc}); pip install -e '.[lab]' "
            "or choose another backend"
        ) from exc
    return cls(topology, run_id, Path(workdir))
