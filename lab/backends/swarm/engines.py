"""The engines of the swarm a lab runs on: one Docker SDK client each, checked to be in the
swarm, and the node image copied to those that lack it (`docker save | docker -H … load`: no
registry needed).

Which engines: $VPNLAB_SWARM_ENGINES ("manager=unix:///var/run/docker.sock,laptop2=tcp://…",
the first being a manager, where the overlay networks are made), else those of the swarm
`make swarm-up` made, else the local engine alone when it is a swarm manager.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import docker
import docker.errors

from lab.backends.swarm import cluster
from lab.model import LabError

ENGINES_ENV = "VPNLAB_SWARM_ENGINES"
NO_SWARM = "no Docker swarm: run `make swarm-up` or `docker swarm init`"


def engine_urls() -> dict[str, str]:
    """name → URL of each engine, the manager first."""
    text = os.environ.get(ENGINES_ENV, "").strip()
    if text:
        urls: dict[str, str] = {}
        for item in text.split(","):
            name, sep, url = item.strip().partition("=")
            if not sep or not name or not url:
                raise LabError(f"{ENGINES_ENV}: {item!r} is not NAME=URL")
            urls[name] = url
        return urls
    made = cluster.engines()
    if made:
        return made
    return {cluster.MANAGER: os.environ.get("DOCKER_HOST", cluster.LOCAL_ENGINE)}


def connect(urls: dict[str, str]) -> dict[str, docker.DockerClient]:
    """A client per engine, each checked to answer and to be an active member of the swarm,
    the first a manager; a LabError of one line otherwise."""
    clients: dict[str, docker.DockerClient] = {}
    for index, (name, url) in enumerate(urls.items()):
        try:
            client = docker.DockerClient(base_url=url, timeout=120)
            info = client.info()
        except docker.errors.DockerException as exc:
            raise LabError(f"engine {name} ({url}) does not answer ({exc}); {NO_SWARM}") from None
        swarm = info.get("Swarm") or {}
        if swarm.get("LocalNodeState") != "active":
            raise LabError(f"engine {name} ({url}) is not in a swarm: {NO_SWARM}")
        if index == 0 and not swarm.get("ControlAvailable"):
            raise LabError(
                f"engine {name} ({url}) is a swarm worker; the first engine must be a manager "
                f"(list it first in {ENGINES_ENV})"
            )
        clients[name] = client
    return clients


def ensure_image(image: str, clients: dict[str, docker.DockerClient], urls: dict[str, str]) -> None:
    """The image on every engine: copied from the first that has it to those that lack it (or
    hold another build under that tag)."""
    ids: dict[str, str | None] = {}
    for name, client in clients.items():
        try:
            ids[name] = client.images.get(image).id
        except docker.errors.ImageNotFound:
            ids[name] = None
    source = next((name for name in clients if ids[name]), None)
    if source is None:
        raise LabError(f"image {image} is on no engine: run `make images` (no registry needed)")
    for name in clients:
        if ids[name] == ids[source]:
            continue
        size = (clients[source].images.get(image).attrs.get("Size") or 0) / 1e6
        print(
            f"vpnlab: copying image {image} ({size:.0f} MB) from engine {source} to {name}…",
            file=sys.stderr,
            flush=True,
        )
        started = time.monotonic()
        command = f"docker -H {urls[source]} save {image} | docker -H {urls[name]} load -q"
        done = subprocess.run(
            ["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, timeout=900
        )
        if done.returncode != 0:
            raise LabError(f"copying {image} to engine {name} failed: {done.stderr.strip()}")
        print(
            f"vpnlab: image {image} on {name} in {time.monotonic() - started:.1f} s",
            file=sys.stderr,
            flush=True,
        )
