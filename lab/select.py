"""Choosing a backend by name: Docker when an engine answers, network namespaces otherwise.

BACKENDS maps each name to its class but imports a backend's module only when that name is
looked up, so the netns path never imports Docker code (nor needs the Docker SDK installed).
"""

from __future__ import annotations

import importlib
import os
import secrets
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path

from lab.backend import Backend, LabError
from lab.model import Topology

_CLASSES = {"docker": ("lab.docker", "DockerBackend"), "netns": ("lab.netns", "NetnsBackend")}


class _Backends(Mapping[str, type[Backend]]):
    """name → Backend class; the class's module is imported on first lookup."""

    def __getitem__(self, name: str) -> type[Backend]:
        module, cls = _CLASSES[name]
        return getattr(importlib.import_module(module), cls)

    def __iter__(self) -> Iterator[str]:
        return iter(_CLASSES)

    def __len__(self) -> int:
        return len(_CLASSES)


BACKENDS: Mapping[str, type[Backend]] = _Backends()


def new_run_id() -> str:
    """Six hex digits: short enough for interface names, random enough for parallel runs."""
    return secrets.token_hex(3)


def docker_answers(timeout: float = 1.0) -> bool:
    """Whether a Docker engine answers `GET /_ping` on $DOCKER_HOST or /var/run/docker.sock."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        if host.startswith("unix://"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(host[len("unix://") :])
        elif host.startswith("tcp://"):
            address, _, port = host[len("tcp://") :].rpartition(":")
            sock = socket.create_connection((address, int(port)), timeout=timeout)
        else:
            return False
        with sock:
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            reply = sock.recv(1024)
    except (OSError, ValueError):
        return False
    status = reply.split(b"\r\n", 1)[0].split()
    return len(status) >= 2 and status[0].startswith(b"HTTP/") and status[1] == b"200"


def default_backend_name() -> str:
    """$VPNLAB_BACKEND if set, else "docker" when a Docker engine answers, else "netns"."""
    chosen = os.environ.get("VPNLAB_BACKEND")
    if chosen:
        if chosen not in BACKENDS:
            raise LabError(
                f"VPNLAB_BACKEND={chosen!r} is not a backend; choose one of {', '.join(BACKENDS)}"
            )
        return chosen
    return "docker" if docker_answers() else "netns"


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
