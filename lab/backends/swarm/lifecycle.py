"""Bringing a swarm lab up and down: the compose networks as attachable overlay networks with
the same subnets (internal stays internal), each node a standalone container on the engine its
placement names — not a swarm service, which cannot map /dev/net/tun — then the Docker
backend's health wait. down() removes by label on every engine, so it works from any process.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import docker
import docker.errors
from docker.types import IPAMConfig, IPAMPool

from lab.backends.base import require_root, require_tun
from lab.backends.docker.engine import (
    NETWORK,
    OWNER,
    PROJECT,
    SERVICE,
    lab_owner,
    remove_network,
)
from lab.backends.docker.lifecycle import DEFAULT_IMAGE, DockerLifecycle, overlaps
from lab.backends.swarm.engines import engine_urls, ensure_image
from lab.backends.swarm.nodes import ENGINE_LABEL, SWARM_LABEL, SwarmNodes
from lab.backends.swarm.placement import place, requested_places
from lab.model import Attachment, LabError, Node

if TYPE_CHECKING:
    from docker.models.networks import Network as DockerNetwork


ATTACH_ATTEMPTS = 6
# What an engine says while the overlay it is asked to attach to is still reaching it, or
# while a busy manager's attachment times out.
NOT_YET = ("attaching to network failed", "not found", "deadline exceeded")


class SwarmLifecycle(SwarmNodes, DockerLifecycle):
    """up() and down() of the swarm backend."""

    def preflight(self) -> None:
        require_root("the swarm lab's captures and cable cuts (in each engine's overlay namespace)")
        require_tun()
        self.engines()  # every engine answers and is in the swarm, or one line says what to do

    def up(self) -> None:
        self.preflight()
        image = os.environ.get("VPNLAB_IMAGE", DEFAULT_IMAGE)
        ensure_image(image, self.engines(), self.engine_urls())
        placement = place(self.topology, list(self.engines()), requested_places())
        for sub in ("run", "logs", "captures"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        (self.workdir / "placement.json").write_text(json.dumps(placement, indent=1) + "\n")
        manager = self.engine()
        self._wait_for_other_labs(manager, time.monotonic() + self.wait_for_other)
        self._check_subnets(manager)
        me = lab_owner(self.kept)
        for network in self.topology.networks.values():
            # A dual-stack network is a dual-stack overlay: enable_ipv6, both subnets.
            pools = [IPAMPool(subnet=str(subnet)) for subnet in network.subnets]
            manager.networks.create(
                f"{self.project}_{network.name}",
                driver="overlay",
                attachable=True,
                internal=network.internal,
                enable_ipv6=network.dual_stack,
                ipam=IPAMConfig(pool_configs=pools),
                labels={PROJECT: self.project, NETWORK: network.name, SWARM_LABEL: "1",
                        OWNER: me},
            )  # fmt: skip
        # One thread per engine, its nodes one after the other: concurrent attachments of one
        # engine's containers to an overlay it has not joined yet time out on the manager.
        per_engine: dict[str, list[Node]] = {}
        for node in self.topology.nodes.values():
            per_engine.setdefault(placement[node.name], []).append(node)
        failed = threading.Event()
        with ThreadPoolExecutor(max_workers=max(1, len(per_engine))) as pool:
            jobs = [
                pool.submit(self._start_nodes, nodes, engine, image, failed)
                for engine, nodes in per_engine.items()
            ]
            try:
                for job in jobs:
                    job.result()
            except docker.errors.APIError as exc:
                raise LabError(f"swarm lab {self.project}: {exc.explanation or exc}") from None
        self._wait_healthy()

    def _start_nodes(
        self, nodes: list[Node], engine: str, image: str, failed: threading.Event
    ) -> None:
        """Start nodes on engine one after the other; stop early once another engine failed."""
        try:
            for node in nodes:
                if failed.is_set():
                    return
                self._start_node(node, engine, image)
        except BaseException:
            failed.set()
            raise

    def _start_node(self, node: Node, engine: str, image: str) -> None:
        """Create node's container on engine, attach it to its networks at its addresses, start."""
        api = self.engines()[engine].api
        nets = [f"{self.project}_{a.network}" for a in node.attachments]
        host_config = api.create_host_config(
            binds={str(self.workdir.resolve()): {"bind": "/lab", "mode": "rw"}},
            cap_add=list(node.cap_add) or None,
            devices=list(node.devices) or None,
            sysctls=dict(node.sysctls) or None,
            init=True,
            network_mode=nets[0] if nets else "none",
        )
        first = node.attachments[0] if node.attachments else None
        networking = (
            api.create_networking_config({nets[0]: api.create_endpoint_config(**_addresses(first))})
            if first
            else None
        )
        labels = {
            **node.labels, PROJECT: self.project, SERVICE: node.name, SWARM_LABEL: "1",
            ENGINE_LABEL: engine,
        }  # fmt: skip
        created = api.create_container(
            image,
            command=list(node.command) or None,
            name=f"{self.project}-{node.name}",
            labels=labels,
            host_config=host_config,
            networking_config=networking,
            stop_signal="SIGTERM",
        )
        # A new overlay reaches each engine a moment after it is made, and a busy manager's
        # attachment can time out ("context deadline exceeded", more often on dual-stack
        # overlays): both are tried again.
        _retrying(
            lambda: api.start(created["Id"]),
            f"node {node.name} would not start on engine {engine}",
        )
        # Further networks once it runs: an attachable overlay's attachment to a container
        # that is only created times out on the manager.
        for net, attachment in zip(nets[1:], node.attachments[1:], strict=True):
            join = functools.partial(
                api.connect_container_to_network, created["Id"], net, **_addresses(attachment)
            )
            # done_if: a timed-out attempt went through after all
            _retrying(join, f"node {node.name}: cannot join {net}", done_if="already exists")

    def down(self) -> None:
        clients = self.answering_engines()
        if not clients:
            return  # no engine answers: it runs nothing of ours either
        manager = next(iter(clients.values()))
        self._containers.clear()
        self._interfaces.clear()
        wanted = {"label": f"{PROJECT}={self.project}"}
        for client in clients.values():
            for box in client.containers.list(all=True, filters=wanted):
                with contextlib.suppress(docker.errors.NotFound):
                    box.remove(force=True, v=True)
        problems = []
        deadline = time.monotonic() + 30
        for network in self._project_networks(manager):
            # A worker's endpoints go a moment after its containers.
            left = remove_network(manager, network, seconds=deadline - time.monotonic())
            if left:
                problems.append(left)
        # The manager forgets a removed overlay a moment later; the next lab checks its subnets.
        while self._project_networks(manager) and time.monotonic() < deadline:
            time.sleep(0.2)
        if len(clients) < len(engine_urls()):
            # An engine is gone: its attachments may hold a network until the swarm notices
            # (or is left, as `make swarm-down` does); nothing of ours runs there any more.
            return
        if problems or self._project_networks(manager):
            detail = "; ".join(problems) or "its overlay networks remain"
            raise LabError(f"could not remove swarm lab {self.project}: {detail}")

    def _overlapping(self, client: docker.DockerClient) -> list[DockerNetwork]:
        """Swarm networks of other labs on the lab's subnets (an engine's local bridges are in
        another address space: a Docker lab on the same engine does not clash)."""
        found = []
        for net in client.networks.list(filters={"driver": "overlay"}):
            labels = net.attrs.get("Labels") or {}
            if labels.get(PROJECT) == self.project or net.attrs.get("Scope") != "swarm":
                continue
            if overlaps(net, self.topology):
                found.append(net)
        return found


def _retrying(action: Callable[[], object], failure: str, done_if: str = "") -> None:
    """Run an engine call, again (up to ATTACH_ATTEMPTS, backing off) while the engine says
    the overlay is not there yet or its attachment timed out; else a LabError `failure: …`."""
    for attempt in range(ATTACH_ATTEMPTS):
        try:
            action()
            return
        except docker.errors.APIError as exc:
            said = str(exc)
            if done_if and done_if in said:
                return
            if not any(words in said for words in NOT_YET) or attempt == ATTACH_ATTEMPTS - 1:
                raise LabError(f"{failure}: {exc.explanation}") from None
            time.sleep(1 + attempt)


def _addresses(attachment: Attachment) -> dict[str, str]:
    """The endpoint's static address, as the SDK's keyword. IPv4 only: the engine (20.10) would
    not take an IPv6 one on an overlay (it picks its own), and a container joining a second
    dual-stack overlay with one asked for times out (SwarmBackend.static_ipv6)."""
    return {"ipv4_address": str(attachment.address)}
