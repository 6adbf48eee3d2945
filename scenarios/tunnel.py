"""The VPN inside a running lab: credentials, server and clients, and what they report.

Everything about where the VPN runs comes from the compose files: the node labelled
`vpnlab.role: gateway` runs the server, with the pools (IPv4 and, with `vpnlab.vpn.pool6`,
IPv6), pushed networks and port from its `vpnlab.vpn.*` labels; nodes labelled
`vpnlab.role: client` run clients. On a dual-stack lab the server listens on both families.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lab.backends.base import Backend, Process
from lab.model import LabError, Node
from scenarios.probes import ping
from vpn.config import ServerConfig
from vpn.credentials import pki

TUN = "tun0"
METRICS = "127.0.0.1:9100"  # the gateway's Prometheus endpoint, scraped from the gateway itself
ETC_NETNS = Path("/etc/netns")
# Why a scenario's IPv6 steps are skipped: the lab (or its runtime) has no IPv6 to test.
NO_IPV6 = (
    "no IPv6 in this lab: the gateway has no pool6 (label vpnlab.vpn.pool6), the networks no IPv6 "
    "subnet, or the runtime does not give the static IPv6 addresses (a swarm's overlays)"
)
PRIVATE_RESOLV_CONF = "# vpnlab: this node's own resolver file (the VPN client may change it)\n"


def tunnel_mtu(backend: Backend) -> int:
    """The server's TUN MTU on this backend: vpn's default, less what the backend's own
    encapsulation of the lab's links takes (e.g. VXLAN on a swarm's overlay networks)."""
    return ServerConfig.mtu - backend.link_overhead


def nodes_with_role(backend: Backend, role: str) -> list[Node]:
    return [n for n in backend.topology.nodes.values() if n.labels.get("vpnlab.role") == role]


class Tunnel:
    """Starts and watches the VPN processes of one lab run."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        (gateway,) = nodes_with_role(backend, "gateway")
        self.gateway = gateway
        labels = gateway.labels
        try:
            self.pool = labels["vpnlab.vpn.pool"]
            self.network = labels["vpnlab.vpn.network"]
            self.port = int(labels.get("vpnlab.vpn.port", "4433"))
            pushed = [n.strip() for n in labels.get("vpnlab.vpn.push", "").split(",") if n.strip()]
        except KeyError as exc:
            raise LabError(
                f"gateway {gateway.name}: label {exc} missing in the compose file"
            ) from None
        # IPv6 in the tunnel only where the nodes have the compose files' IPv6 addresses.
        self.pool6 = labels.get("vpnlab.vpn.pool6", "") if backend.static_ipv6 else ""
        networks = [backend.topology.network(n) for n in pushed]
        self.routes = [str(n.subnet) for n in networks]
        self.routes6 = [str(n.subnet6) for n in networks if n.subnet6 and self.pool6]
        self.server_address = str(gateway.address(self.network))
        outer = gateway.attachment(self.network).address6
        self.server_address6 = str(outer) if outer and backend.static_ipv6 else None
        self.clients = [n.name for n in nodes_with_role(backend, "client")]
        self.hosts = [n.name for n in nodes_with_role(backend, "host")]
        self.processes: dict[str, Process] = {}
        self.metrics_server: Process | None = None  # the server serving METRICS
        self.pki = pki.lab_pki(
            backend.workdir / "pki",
            server_name=gateway.name,
            server_sans=tuple(a for a in (self.server_address, self.server_address6) if a),
            clients=tuple(self.clients),
        )

    def path(self, key: str) -> str:
        return self.backend.node_path(Path(self.pki[key]))

    # -- processes -----------------------------------------------------------------------------
    def server_argv(
        self, *extra: str, server_cert: str = "server", metrics: bool = False
    ) -> list[str]:
        layer3 = "--tap" not in extra  # a TAP carries IPv6 as it is: no pool6, no IPv6 routes
        routes6 = self.routes6 if layer3 else []
        routes = [arg for r in (*self.routes, *routes6) for arg in ("--route", r)]
        routes += ["--pool6", self.pool6] if self.pool6 and layer3 else []
        routes += ["--metrics", METRICS] if metrics else []
        mtu = tunnel_mtu(self.backend)
        sized = ["--mtu", str(mtu)] if mtu != ServerConfig.mtu else []
        return [
            *self.backend.vpn_argv(), "server",
            "--ca", self.path("ca"), "--crl", self.path("crl"),
            "--cert", self.path(server_cert), "--key", self.path(f"{server_cert}.key"),
            "--listen", self.listen, "--pool", self.pool, *routes,
            "--tun", TUN, "--keepalive", "2", "--dead-peer", "6", *sized,
            *extra,
        ]  # fmt: skip

    @property
    def listen(self) -> str:
        """Both families where the gateway's outer network is dual-stack, else IPv4's."""
        return f"[::]:{self.port}" if self.server_address6 else f"0.0.0.0:{self.port}"

    def endpoint(self, *, ipv6: bool = False) -> str:
        """The server as a client's --server: its outer IPv4 address, or IPv6 in brackets."""
        if not ipv6:
            return f"{self.server_address}:{self.port}"
        if self.server_address6 is None:
            raise LabError(f"network {self.network} has no IPv6 subnet: no IPv6 outer address")
        return f"[{self.server_address6}]:{self.port}"

    def client_argv(
        self, cert: str, *extra: str, ca: str = "ca", outer6: bool = False
    ) -> list[str]:
        directory = self.pki["rogue_dir"] if cert.startswith("rogue") else self.pki["dir"]
        cert_path = self.backend.node_path(Path(directory) / f"{cert}.crt")
        key_path = self.backend.node_path(Path(directory) / f"{cert}.key")
        return [
            *self.backend.vpn_argv(), "client",
            "--ca", self.path(ca), "--cert", cert_path, "--key", key_path,
            "--server", self.endpoint(ipv6=outer6), "--server-name", self.gateway.name,
            "--tun", TUN, "--reconnect-min", "0.3", "--reconnect-max", "2",
            *extra,
        ]  # fmt: skip

    def start_server(
        self, *extra: str, name: str = "vpn-server", server_cert: str = "server"
    ) -> Process:
        # Metrics on for the gateway's server; a second one running beside it (an impostor)
        # would find the port taken.
        held = self.metrics_server
        metrics = held is None or self.backend.wait(held, 0) is not None
        argv = self.server_argv(*extra, server_cert=server_cert, metrics=metrics)
        process = self.backend.spawn(self.gateway.name, argv, name=name)
        self.processes[name] = process
        if metrics:
            self.metrics_server = process
        self.wait_log(process, "event=listening", "the server to listen")
        return process

    def start_client(
        self,
        node: str,
        *extra: str,
        cert: str | None = None,
        name: str | None = None,
        outer6: bool = False,
    ) -> Process:
        name = name or f"vpn-{node}"
        self.private_resolver(node)
        argv = self.client_argv(cert or node, *extra, outer6=outer6)
        process = self.backend.spawn(node, argv, name=name)
        self.processes[name] = process
        return process

    def private_resolver(self, node: str) -> None:
        """A node that is an `ip netns` namespace sees the host's /etc/resolv.conf unless
        /etc/netns/NS/resolv.conf exists when its programs start: write that file (in the
        directory the lab made for the node's hosts file, removed with the lab), so the client
        changes the node's resolver, never the host's. A container has its own already."""
        name = self.backend.exec(node, ["ip", "netns", "identify"], timeout=10).stdout.strip()
        directory = ETC_NETNS / name
        if name and directory.is_dir() and not (directory / "resolv.conf").exists():
            (directory / "resolv.conf").write_text(PRIVATE_RESOLV_CONF)

    def wait_log(self, process: Process, text: str, what: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            log = self.backend.logs(process)
            if text in log:
                return log
            status = self.backend.wait(process, 0)
            if status is not None:
                raise LabError(
                    f"{what}: {process.name} exited with status {status}:\n{log[-2000:]}"
                )
            if time.monotonic() > deadline:
                raise LabError(
                    f"{what}: no '{text}' from {process.name} within {timeout:g} s:\n{log[-2000:]}"
                )
            time.sleep(0.1)

    def stop_all(self) -> None:
        for process in self.processes.values():
            self.backend.stop(process, timeout=5)

    # -- what they report ----------------------------------------------------------------------
    def status(self, node: str) -> dict[str, Any] | None:
        result = self.backend.exec(node, [*self.backend.vpn_argv(), "status", "--json"], timeout=10)
        if result.returncode != 0:
            return None
        answer: dict[str, Any] = json.loads(result.stdout)
        return answer

    def wait_connected(
        self, node: str, timeout: float = 20.0, *, reconnects: int = 0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(node)
            if status and status.get("state") == "connected" and status["reconnects"] >= reconnects:
                return status
            if time.monotonic() > deadline:
                raise LabError(f"{node}: tunnel not up within {timeout:g} s (status: {status})")
            time.sleep(0.2)

    def ping(self, node: str, address: str, *, count: int = 1, size: int | None = None,
             extra: Sequence[str] = (), timeout: float = 2) -> tuple[bool, str]:  # fmt: skip
        """(all answered, ping's summary line)."""
        result = ping(self.backend, node, address, *extra, count=count, size=size, wait=timeout)
        lines = [line for line in result.output.splitlines() if "packets transmitted" in line]
        return result.ok, lines[0].strip() if lines else result.output
