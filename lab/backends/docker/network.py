"""A Docker lab's network verbs: interfaces found by address, sysctls set from outside the
container, cables pulled at the host end of a veth, captures on a network's bridge.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

from lab.backends.base import Capture
from lab.backends.docker.nodes import NAME, DockerNodes
from lab.backends.tcpdump import tcpdump
from lab.model import LabError


class DockerNetworking(DockerNodes):
    """The Docker backend's network verbs: interface, set_sysctl, cutting links, capture."""

    def interface(self, node: str, network: str) -> str:
        key = (node, network)
        if key not in self._interfaces:
            address = str(self.topology.node(node).address(network))
            links = json.loads(self.ensure(node, ["ip", "-j", "-4", "addr", "show"]))
            for link in links:
                if any(a.get("local") == address for a in link.get("addr_info", ())):
                    self._interfaces[key] = link["ifname"]
                    break
            else:
                raise LabError(
                    f"{node} has no interface with address {address} (network {network}); "
                    "was the container started from compose/*.yml?"
                )
        return self._interfaces[key]

    def _write_sysctl(self, node: str, key: str, value: str) -> None:
        box = self.container(node)
        box.reload()
        pid = box.attrs["State"]["Pid"]
        argv = ["nsenter", f"--net=/proc/{pid}/ns/net", "sysctl", "-qw", f"{key}={value}"]
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            raise LabError(f"{node}: `{shlex.join(argv)}` failed: {done.stderr.strip()}")

    @contextlib.contextmanager
    def capture(self, network: str, name: str, bpf: str = "") -> Iterator[Capture]:
        if not NAME.fullmatch(name):
            raise LabError(f"capture name {name!r}: use letters, digits, '.', '-' and '_'")
        path = self.workdir / "captures" / f"{name}.pcap"
        with tcpdump(self.bridge(network), path, bpf):
            yield Capture(network=network, path=path)

    def _set_link(self, node: str, network: str, state: str) -> None:
        """Set the host end of node's veth on network down/up: addresses and routes on the
        node stay as they are, as when a cable is pulled."""
        ifname = self.interface(node, network)
        iflink = int(self.ensure(node, ["cat", f"/sys/class/net/{ifname}/iflink"]).strip())
        bridge = self.bridge(network)
        peer = None
        for dev in Path("/sys/class/net").iterdir():
            with contextlib.suppress(OSError, ValueError):
                if int((dev / "ifindex").read_text()) == iflink:
                    peer = dev.name
                    break
        master = Path("/sys/class/net", peer or "-", "master")
        if peer is None or not master.exists() or master.resolve().name != bridge:
            raise LabError(
                f"the host end of {node}'s {ifname} (ifindex {iflink}) is not a port of bridge "
                f"{bridge} in this network namespace; is the Docker engine on this host?"
            )
        done = subprocess.run(
            ["ip", "link", "set", "dev", peer, state], capture_output=True, text=True
        )
        if done.returncode != 0:
            raise LabError(
                f"`ip link set dev {peer} {state}` failed: {done.stderr.strip()} "
                "(link_down/link_up need root on the host)"
            )
