"""A throwaway VPN testbed in network namespaces: gateway, LAN host, clients — and the VPN
processes running in them. Every namespace and process is recorded and removed, on failure too.

The addresses are the test's own (10.201-203.x), unrelated to the lab's compose topology: these
tests prove the VPN works on any Linux host, not only in the lab.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

POOL = "10.203.0.0/24"
LAN = "10.202.0.0/24"
GATEWAY_LAN = "10.202.0.1"
HOST = "10.202.0.2"
ETC_NETNS = Path("/etc/netns")
RESOLV_CONF = "# the testbed's own resolver file for this namespace\nnameserver 10.202.0.99\n"


def sh(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=timeout)


def wait_for(what: str, predicate: Callable[[], object], timeout: float = 15.0, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(step)


@dataclass
class VpnProcess:
    ns: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen[bytes]

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int | None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        return self.popen.returncode


@dataclass
class Testbed:
    """gateway ns (10.201.N.1 per client link, 10.202.0.1 on the LAN), host ns, client nses."""

    __test__ = False  # not a test class, despite its name

    workdir: Path
    prefix: str = field(default_factory=lambda: f"vpnt{secrets.token_hex(3)}")
    namespaces: list[str] = field(default_factory=list)
    processes: list[VpnProcess] = field(default_factory=list)
    clients: dict[str, str] = field(default_factory=dict)  # name -> ns
    etc_dirs: list[Path] = field(default_factory=list)  # /etc/netns/NS made by us

    @property
    def gateway(self) -> str:
        return f"{self.prefix}-gw"

    @property
    def host(self) -> str:
        return f"{self.prefix}-host"

    def _ns(self, name: str) -> str:
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def _veth(self, a: str, a_if: str, a_addr: str, b: str, b_if: str, b_addr: str) -> None:
        tmp_a, tmp_b = (
            f"{self.prefix}a{len(self.namespaces)}",
            f"{self.prefix}b{len(self.namespaces)}",
        )
        sh("ip", "link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b)
        sh("ip", "link", "set", tmp_a, "netns", a, "name", a_if)
        sh("ip", "link", "set", tmp_b, "netns", b, "name", b_if)
        for ns, ifname, addr in ((a, a_if, a_addr), (b, b_if, b_addr)):
            sh("ip", "-n", ns, "addr", "add", addr, "dev", ifname)
            sh("ip", "-n", ns, "link", "set", ifname, "up")

    def up(self) -> Testbed:
        self._ns(self.gateway)
        self._ns(self.host)
        self._veth(self.gateway, "lan0", f"{GATEWAY_LAN}/24", self.host, "eth0", f"{HOST}/24")
        sh("ip", "netns", "exec", self.gateway, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        sh("ip", "-n", self.host, "route", "add", POOL, "via", GATEWAY_LAN)
        return self

    def add_client(self, name: str) -> str:
        """A client namespace with its own link to the gateway; returns the gateway address."""
        index = len(self.clients) + 1
        ns = self._ns(f"{self.prefix}-{name}")
        self._veth(
            self.gateway, f"wan{index}", f"10.201.{index}.1/24", ns, "eth0", f"10.201.{index}.2/24"
        )
        self.clients[name] = ns
        self._private_resolv_conf(ns)
        return f"10.201.{index}.1"

    def _private_resolv_conf(self, ns: str) -> None:
        """/etc/netns/NS/resolv.conf, which `ip netns exec` mounts over /etc/resolv.conf: without
        it a client in NS would see (and could change) the host's resolver."""
        directory = ETC_NETNS / ns
        directory.mkdir(parents=True, exist_ok=False)
        self.etc_dirs.append(directory)
        (directory / "resolv.conf").write_text(RESOLV_CONF)

    def run(self, ns: str, *argv: str, timeout: float = 30, check: bool = False):
        return sh("ip", "netns", "exec", ns, *argv, timeout=timeout, check=check)

    def ping(self, ns: str, address: str, count: int = 1, size: int | None = None) -> bool:
        extra = ["-s", str(size)] if size else []
        result = self.run(
            ns, "ping", "-n", "-q", "-c", str(count), "-W", "2", "-i", "0.2", *extra, address
        )
        return result.returncode == 0

    def spawn(self, ns: str, name: str, args: Sequence[str]) -> VpnProcess:
        return self.spawn_command(ns, name, [sys.executable, "-m", "vpn", *args])

    def spawn_command(self, ns: str, name: str, command: Sequence[str]) -> VpnProcess:
        log = self.workdir / f"{name}.log"
        argv = ["ip", "netns", "exec", ns, *command]
        with log.open("ab") as out:
            popen = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        process = VpnProcess(ns, argv, log, popen)
        self.processes.append(process)
        return process

    def status(self, ns: str, control: str | None = None) -> dict | None:
        args = [sys.executable, "-m", "vpn", "status", "--json"]
        if control:
            args += ["--control", control]
        result = self.run(ns, *args, timeout=10)
        return json.loads(result.stdout) if result.returncode == 0 else None

    def down(self) -> None:
        for process in self.processes:
            process.stop(signal.SIGKILL if process.alive() else signal.SIGTERM, timeout=5)
        for ns in reversed(self.namespaces):
            sh("ip", "netns", "del", ns, check=False)
        self.namespaces.clear()
        for directory in self.etc_dirs:
            shutil.rmtree(directory, ignore_errors=True)
        self.etc_dirs.clear()

    def leftovers(self) -> list[str]:
        listed = sh("ip", "netns", "list").stdout
        names = [line.split()[0] for line in listed.splitlines() if line.strip()]
        return [n for n in names if n.startswith(self.prefix)]


def server_args(pki: dict[str, Path], *extra: str, crl: bool = False) -> list[str]:
    args = [
        "server",
        "--ca", str(pki["ca"]),
        "--cert", str(pki["server"]),
        "--key", str(pki["server.key"]),
        "--pool", POOL,
        "--route", LAN,
        "--tun", "vpn0",
        "--keepalive", "1",
        "--dead-peer", "4",
        "--handshake-timeout", "3",
        *(["--crl", str(pki["crl"])] if crl else []),
        *extra,
    ]  # fmt: skip
    return args


def client_args(
    pki_dir: Path, name: str, server: str, *extra: str, ca: Path | None = None
) -> list[str]:
    return [
        "client",
        "--ca", str(ca or pki_dir / "ca.crt"),
        "--cert", str(pki_dir / f"{name}.crt"),
        "--key", str(pki_dir / f"{name}.key"),
        "--server", f"{server}:4433",
        "--server-name", "gateway",
        "--tun", "vpn0",
        "--reconnect-min", "0.2",
        "--reconnect-max", "1",
        "--connect-timeout", "3",
        *extra,
    ]  # fmt: skip


def connected(bed: Testbed, ns: str) -> dict | None:
    status = bed.status(ns)
    if status and status.get("role") == "client" and status.get("state") == "connected":
        return status
    return None


def env_has_root() -> bool:
    return os.geteuid() == 0
