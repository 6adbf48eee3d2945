"""The Docker engine and compose CLI the backend drives, and the names it gives a run there.

A client is made per backend object (a swarm backend may hold clients of several engines); the
functions here take the client they act on.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import time
from typing import TYPE_CHECKING

import docker
import docker.errors

from lab.backends.docker.ping import docker_answers
from lab.model import LabError
from lab.procfs import start_time

if TYPE_CHECKING:
    from docker.models.networks import Network as DockerNetwork

PROJECT_PREFIX = "vpnlab-"
PROJECT = "com.docker.compose.project"
SERVICE = "com.docker.compose.service"
NETWORK = "com.docker.compose.network"
OWNER = "vpnlab.owner"
# The owner of a lab meant to outlive the process that made it (`vpnlab up`, a kept scenario):
# such a lab is never an orphan, only `vpnlab down` removes it.
KEPT = "kept"


def project_name(run_id: str) -> str:
    """The compose project of a run: `vpnlab-<run_id>` (names of containers and networks)."""
    name = f"{PROJECT_PREFIX}{run_id}"
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name):
        raise LabError(
            f"run id {run_id!r} cannot name a compose project: use lower-case letters, digits, "
            "'-' and '_'"
        )
    return name


def engine_problem() -> str | None:
    """One line saying what to do when no Docker engine answers (None: one does)."""
    if docker_answers():
        return None
    where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if shutil.which("dockerd") is None and shutil.which("docker") is None:
        return (
            "no Docker engine is installed: `make deps` installs and starts one, or use the "
            "namespace backend (--backend netns)"
        )
    return (
        f"the Docker engine is not running (nothing answers on {where}): start it "
        "(`make deps`, or systemctl start docker) or use the namespace backend (--backend netns)"
    )


def engine() -> docker.DockerClient:
    """A client of the Docker engine, or a LabError that says how to get one."""
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except docker.errors.DockerException as exc:
        raise LabError(
            f"docker info failed: is the Docker daemon running? ({exc}); start it "
            "(`make deps` installs and starts one) or use the namespace backend "
            "(BACKEND=netns)"
        ) from None
    return client


def compose_command() -> list[str]:
    """`docker compose` (v2) if the plugin is there, else `docker-compose` (1.29)."""
    for argv in (["docker", "compose"], ["docker-compose"]):
        try:
            done = subprocess.run([*argv, "version"], capture_output=True, timeout=60)
        except (FileNotFoundError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return argv
    raise LabError(
        "neither `docker compose` (v2) nor `docker-compose` (1.29) works: install one "
        "(`make deps` installs Debian's docker-compose)"
    )


def lab_runs(client: docker.DockerClient | None = None) -> list[str]:
    """Run ids of every lab with a container or network on this engine (to clean after a crash)."""
    client = client or engine()
    projects: set[str] = set()
    for container in client.containers.list(all=True, filters={"label": PROJECT}):
        projects.add(container.labels.get(PROJECT, ""))
    for network in client.networks.list(filters={"label": PROJECT}):
        projects.add((network.attrs.get("Labels") or {}).get(PROJECT, ""))
    return sorted(p.removeprefix(PROJECT_PREFIX) for p in projects if p.startswith(PROJECT_PREFIX))


def project_networks(client: docker.DockerClient, project: str) -> list[DockerNetwork]:
    """A compose project's networks: by label, and by name for any that lost their labels."""
    found = {n.id: n for n in client.networks.list(filters={"label": f"{PROJECT}={project}"})}
    for net in client.networks.list(names=[f"{project}_"]):
        if net.name.startswith(f"{project}_"):
            found.setdefault(net.id, net)
    return list(found.values())


def remove_network(
    client: docker.DockerClient, network: DockerNetwork, seconds: float
) -> str | None:
    """Remove a network whose containers are gone; what is left, as one line (None: nothing).

    An endpoint can outlive its container: Docker drops it a moment later (a swarm worker's
    endpoints), or — seen once in 100 soak cycles, after a SIGKILLed process inside — never,
    and the network then blocks every later lab on its subnet. Such endpoints are waited for,
    then disconnected by force (`docker network disconnect -f`, meant for exactly this).
    """
    deadline = time.monotonic() + seconds
    while True:
        try:
            network.remove()
            return None
        except docker.errors.NotFound:
            return None
        except docker.errors.APIError as exc:
            if time.monotonic() > deadline:
                if "active endpoints" not in str(exc):
                    return f"network {network.name}: {exc}"
                return (
                    f"network {network.name} cannot be removed: Docker still counts an endpoint "
                    "though no container is attached (a known engine bug, moby/moby#42119); "
                    "only a restart of the Docker daemon drops it"
                )
            if "active endpoints" in str(exc):
                _disconnect_all(client, network)
            time.sleep(0.5)


def _disconnect_all(client: docker.DockerClient, network: DockerNetwork) -> None:
    try:
        network.reload()
    except docker.errors.NotFound:
        return
    for key, endpoint in (network.attrs.get("Containers") or {}).items():
        with contextlib.suppress(docker.errors.APIError):
            client.api.disconnect_container_from_network(
                endpoint.get("Name") or key, network.id, force=True
            )


def owner(pid: int) -> str | None:
    """host/pid/start-time of a live process: names a lab's owner, safe against pid reuse."""
    started = start_time(pid)
    return None if started is None else f"{socket.gethostname()}/{pid}/{started}"


def lab_owner(kept: bool) -> str:
    """The owner label of a lab this process brings up."""
    return KEPT if kept else owner(os.getpid()) or ""


def owner_gone(name: str) -> bool:
    """Whether an owner string names a process of this host that has ended.

    Its lab is an orphan: the run was killed before its teardown (SIGKILL, a lost session).
    A kept lab, an unlabelled one or another host's are never called orphans.
    """
    host, _, rest = name.partition("/")
    pid, _, started = rest.partition("/")
    if host != socket.gethostname() or not pid.isdigit() or not started.isdigit():
        return False
    return owner(int(pid)) != name


def owner_alive(name: str) -> bool:
    """Whether the process an owner string names still runs (on this host)."""
    host, _, rest = name.partition("/")
    pid, _, _ = rest.partition("/")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    return owner(int(pid)) == name
