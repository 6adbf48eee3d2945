"""Bringing a Docker lab up and down with compose: waiting for another lab on the same subnets,
refusing a clash, opening the bridges in Docker's firewall, waiting for every node's health.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import docker
import docker.errors

from lab.backends.base import tail
from lab.backends.docker import iptables
from lab.backends.docker.engine import (
    OWNER,
    PROJECT,
    PROJECT_PREFIX,
    compose_command,
    lab_owner,
    owner,
    owner_alive,
    owner_gone,
    project_networks,
    remove_network,
)
from lab.backends.docker.nodes import DockerNodes
from lab.model import LabError, Topology

if TYPE_CHECKING:
    from docker.models.networks import Network as DockerNetwork

DEFAULT_IMAGE = "vpnlab/node:latest"


class DockerLifecycle(DockerNodes):
    """up() and down() of the Docker backend."""

    def up(self) -> None:
        self.preflight()
        client = self.engine()
        image = os.environ.get("VPNLAB_IMAGE", DEFAULT_IMAGE)
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            raise LabError(
                f"image {image} is missing: run `make images` (it builds the node image "
                "without a registry)"
            ) from None
        for sub in ("run", "logs", "captures"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.wait_for_other
        while True:
            self._wait_for_other_labs(client, deadline)
            self._reap_orphans(client)
            self._check_subnets(client)
            done = self._run_compose("up", "-d", "--no-build", "--remove-orphans", timeout=300)
            if done.returncode == 0:
                break
            output = (done.stderr + done.stdout).strip()
            if "overlaps" in output and time.monotonic() < deadline:
                # Another run created its networks between our check and ours: wait for it.
                self._run_compose("down", "-v", "--remove-orphans", "-t", "1", timeout=120)
                continue
            raise LabError(
                f"`compose up` for {self.project} failed (exit {done.returncode}):\n{tail(output)}"
            )
        iptables.accept_within_bridges(self.project, map(self.bridge, self.topology.networks))
        self._drop_dead_end_default_routes()
        self._wait_healthy()

    def _drop_dead_end_default_routes(self) -> None:
        """Remove the IPv6 default route Docker gives a container on an internal network.

        It points at the bridge, which forwards nothing (the network is internal), yet it makes
        every IPv6 destination look routed; IPv4 gets none, and the namespace backend adds none.
        """
        internal6 = [n.subnet6 for n in self.topology.networks.values() if n.internal and n.subnet6]
        if not internal6:
            return

        def drop(node: str) -> None:
            shown = self.exec(node, ["ip", "-6", "-o", "route", "show", "default"], timeout=10)
            for line in shown.stdout.splitlines():
                words = line.split()
                if "via" not in words:
                    continue
                via = ipaddress.ip_address(words[words.index("via") + 1])
                if any(via in subnet for subnet in internal6):
                    gone = self.exec(node, ["ip", "-6", "route", "del", "default", "via", str(via)])
                    if gone.returncode != 0:
                        print(
                            f"vpnlab: {node} keeps Docker's IPv6 default route via {via} (no "
                            f"NET_ADMIN?): {gone.stderr.strip()}",
                            file=sys.stderr,
                            flush=True,
                        )

        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(drop, self.topology.nodes))

    def down(self) -> None:
        try:
            client = self.engine()
        except LabError:
            return  # no engine answers: it runs nothing of ours either
        self._containers.clear()
        self._interfaces.clear()
        problems = []
        try:
            iptables.remove_accept_rules(self.project)
        except LabError as exc:
            problems.append(str(exc))
        if self.topology.files:
            try:
                done = self._run_compose("down", "-v", "--remove-orphans", "-t", "1", timeout=120)
                if done.returncode != 0:
                    problems.append(tail(done.stderr + done.stdout))
            except (LabError, subprocess.TimeoutExpired) as exc:
                problems.append(str(exc))
        # Whatever compose left (or could not see: other files, a crash): remove by label.
        remove_project(client, self.project, problems)

    def _run_compose(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        if not self.topology.files:
            raise LabError(
                "the topology names no compose file: load it with lab.model.compose.load"
            )
        if self._compose is None:
            self._compose = compose_command()
        argv = [*self._compose, "-p", self.project]
        for file in self.topology.files:
            argv += ["-f", str(Path(file).resolve())]
        env = {
            **os.environ,
            "VPNLAB_WORKDIR": str(self.workdir.resolve()),
            "VPNLAB_OWNER": lab_owner(self.kept),
        }
        return subprocess.run(
            [*argv, *args], env=env, capture_output=True, text=True, timeout=timeout
        )

    def _wait_for_other_labs(self, client: docker.DockerClient, deadline: float) -> None:
        """While a live process elsewhere runs a lab on our subnets, wait (until deadline).

        A lab whose owner is gone (crashed, or left up by `make up`) is not waited for:
        _check_subnets then says to run `make down`.
        """
        told = False
        while time.monotonic() < deadline:
            busy = sorted(
                {
                    f"{labels.get(PROJECT)} (pid {holder.split('/')[1]})"
                    for net in self._overlapping(client)
                    for labels in [net.attrs.get("Labels") or {}]
                    for holder in [labels.get(OWNER, "")]
                    if holder and holder != owner(os.getpid()) and owner_alive(holder)
                }
            )
            if not busy:
                return
            if not told:
                print(
                    f"vpnlab: {', '.join(busy)} uses the lab's subnets on this Docker engine; "
                    f"waiting up to {deadline - time.monotonic():.0f} s for it to finish",
                    file=sys.stderr,
                    flush=True,
                )
                told = True
            time.sleep(1)

    def _reap_orphans(self, client: docker.DockerClient) -> None:
        """Remove the labs on our subnets whose owner process has ended without its teardown.

        A run killed by SIGKILL (or with the session that ran it) leaves its lab up, and every
        later run would be refused; its owner label proves nobody uses it any more. Only
        single-engine labs (bridge networks) are removed here: a swarm lab spans engines.
        """
        orphans = {
            labels[PROJECT]: labels[OWNER]
            for net in self._overlapping(client)
            for labels in [net.attrs.get("Labels") or {}]
            if net.attrs.get("Driver") == "bridge"
            and labels.get(PROJECT, "").startswith(PROJECT_PREFIX)
            and owner_gone(labels.get(OWNER, ""))
        }
        for project, holder in sorted(orphans.items()):
            print(
                f"vpnlab: removing lab {project}: the run that made it (pid "
                f"{holder.split('/')[1]}) ended without taking it down",
                file=sys.stderr,
                flush=True,
            )
            with contextlib.suppress(LabError):
                iptables.remove_accept_rules(project)
            problems: list[str] = []
            remove_project(client, project, problems)

    def _overlapping(self, client: docker.DockerClient) -> list[DockerNetwork]:
        """Docker networks of other projects whose subnets (IPv4 or IPv6) overlap the lab's."""
        found = []
        for net in client.networks.list():
            if (net.attrs.get("Labels") or {}).get(PROJECT) == self.project:
                continue
            if overlaps(net, self.topology):
                found.append(net)
        return found

    def _check_subnets(self, client: docker.DockerClient) -> None:
        """Refuse to start over another network on the lab's subnets, saying whose it is."""
        clashes = []
        for net in self._overlapping(client):
            project = (net.attrs.get("Labels") or {}).get(PROJECT, "")
            if project.startswith(PROJECT_PREFIX):
                hint = (
                    f"another lab is up (run {project.removeprefix(PROJECT_PREFIX)}): "
                    "`make down` removes it"
                )
            else:
                hint = f"remove it (`docker network rm {net.name}`) if unused"
            subnets = ", ".join(
                c.get("Subnet", "?") for c in (net.attrs.get("IPAM") or {}).get("Config") or ()
            )
            clashes.append(f"Docker network {net.name} ({subnets}): {hint}")
        if clashes:
            ours = ", ".join(
                f"{n.name} {' '.join(map(str, n.subnets))}" for n in self.topology.networks.values()
            )
            raise LabError(
                f"cannot create the lab's networks ({ours}); they overlap " + "; ".join(clashes)
            )

    def _wait_healthy(self) -> None:
        """Wait until every node runs and passes its compose healthcheck test.

        The test is run here, at once and in parallel: Docker's own first check comes only one
        interval after start (and `up --wait` is v2-only). Docker's verdict counts too.
        """
        deadline = time.monotonic() + self.health_timeout
        pending = dict.fromkeys(self.topology.nodes, "no container yet")
        with ThreadPoolExecutor(max_workers=4) as pool:
            while True:
                running = []
                for node in list(pending):
                    try:
                        container = self.container(node)
                        container.reload()
                    except (LabError, docker.errors.NotFound):
                        self._containers.pop(node, None)
                        continue
                    state = container.attrs["State"]
                    if state.get("Status") != "running":
                        logs = container.logs(tail=20).decode(errors="replace")
                        raise LabError(
                            f"node {node} stopped while the lab came up (exit "
                            f"{state.get('ExitCode')}): {tail(logs) or 'no output'}"
                        )
                    health = state.get("Health") or {}
                    if health.get("Status") == "healthy":
                        del pending[node]
                    else:
                        running.append(node)
                        docker_log = (health.get("Log") or [{}])[-1].get("Output", "")
                        pending[node] = f"Docker says {health.get('Status')}: {tail(docker_log)}"
                for node, (ok, output) in zip(running, pool.map(self._probe, running), strict=True):
                    if ok:
                        del pending[node]
                    else:
                        pending[node] = f"healthcheck failed: {output}; " + pending[node]
                if not pending:
                    return
                if time.monotonic() >= deadline:
                    detail = "; ".join(f"{node}: {why}" for node, why in pending.items())
                    raise LabError(
                        f"lab {self.project} not healthy after {self.health_timeout:g} s: {detail}"
                    )
                time.sleep(0.2)

    def _probe(self, node: str) -> tuple[bool, str]:
        """Run node's healthcheck test once: (passed, what it printed)."""
        argv = self.topology.node(node).healthcheck
        if not argv:
            return True, ""
        try:
            done = self.exec(node, argv, timeout=10)
        except LabError as exc:
            return False, str(exc)
        return done.returncode == 0, tail(done.stderr + done.stdout) or f"exit {done.returncode}"


def overlaps(net: DockerNetwork, topology: Topology) -> bool:
    """Whether a Docker network's subnets overlap one of the topology's, family by family."""
    ours = [s for n in topology.networks.values() for s in n.subnets]
    for config in (net.attrs.get("IPAM") or {}).get("Config") or ():
        with contextlib.suppress(ValueError):
            subnet = ipaddress.ip_network(config.get("Subnet", ""), strict=False)
            if any(subnet.version == o.version and subnet.overlaps(o) for o in ours):
                return True
    return False


def remove_project(client: docker.DockerClient, project: str, problems: list[str]) -> None:
    """Remove a compose project's containers and networks by label; a LabError if any remain."""
    selector = {"label": f"{PROJECT}={project}"}
    for container in client.containers.list(all=True, filters=selector):
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True, v=True)
    for network in project_networks(client, project):
        left = remove_network(client, network, seconds=20)
        if left:
            problems.append(left)
    if project_networks(client, project) or client.containers.list(all=True, filters=selector):
        detail = "; ".join(problems) or "containers or networks remain"
        raise LabError(f"could not remove lab {project}: {detail}")
