"""The one interface every backend implements; scenarios and tests see nothing else.

A backend realises a `Topology` (from `lab.model.compose.load`) on some runtime — Docker
containers or Linux network namespaces — and gives uniform verbs to act on its nodes. What every
backend shares (the exec contract, ExecTimeout, the first-run checks) is written here, once.
"""

from __future__ import annotations

import abc
import contextlib
import os
import shlex
import signal
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lab.model import LabError, Topology

if TYPE_CHECKING:
    import testinfra.host

TUN = Path("/dev/net/tun")
# NODE=ENGINE,… : where a backend that spreads nodes over several engines (swarm) runs a node;
# `--place` of `vpnlab up` and `vpnlab scenario run` sets it.
PLACE_ENV = "VPNLAB_PLACE"


class ExecTimeout(LabError, subprocess.TimeoutExpired):
    """A command on a node outlived its timeout (it was stopped); every backend's exec raises it.

    Both a LabError and a subprocess.TimeoutExpired, so callers may catch either (which is why
    it lives with the interface and not in the pure lab.model).
    """

    def __init__(
        self, node: str, argv: Sequence[str], timeout: float, output: str = "", stderr: str = ""
    ) -> None:
        subprocess.TimeoutExpired.__init__(self, list(argv), timeout, output, stderr)
        self.node = node

    def __str__(self) -> str:
        return (
            f"{self.node}: `{shlex.join(self.cmd)}` did not finish within {self.timeout:g} s "
            "and was stopped; give it a larger timeout or check why it hangs"
        )


def require_root(needs: str) -> None:
    """LabError (one line: what to do) unless this process is root."""
    if os.geteuid() != 0:
        raise LabError(f"{needs} need root: sudo make up (or run the tests with sudo)")


def require_tun() -> None:
    """LabError (one line: what to do) unless the TUN device the VPN nodes use exists."""
    if not TUN.exists():
        raise LabError(
            f"{TUN} does not exist, and the VPN needs it: load the module (modprobe tun) or, "
            "inside a container, start it with --device /dev/net/tun"
        )


def tail(text: str, lines: int = 8) -> str:
    """The last lines of a command's output, for an error message."""
    return "\n".join(text.strip().splitlines()[-lines:])


@dataclass(frozen=True)
class Process:
    """A long-running program a backend started on a node (e.g. `vpn server`)."""

    node: str
    name: str
    log_path: Path


@dataclass(frozen=True)
class Capture:
    """A packet capture on one network; `path` is a pcap file on the host once stopped."""

    network: str
    path: Path


class Backend(abc.ABC):
    """Realises a topology and acts on its nodes.

    Implementations are listed in `lab.backends.registry`.
    """

    name: str
    # Bytes the runtime's own encapsulation takes from every lab link's MTU (an overlay's
    # VXLAN: 50); the tunnel's MTU is lowered by as much, so a full tunnel packet still fits.
    link_overhead: int = 0
    # A lab meant to outlive the process that brings it up (`vpnlab up`, a kept scenario): a
    # later run never takes it for the orphan of a killed run.
    kept: bool = False
    # Whether the runtime gives nodes the compose files' static IPv6 addresses: where it does
    # not, the lab's IPv6 cannot be tested on it, and the scenarios skip their IPv6 steps.
    static_ipv6: bool = True

    def __init__(self, topology: Topology, run_id: str, workdir: Path) -> None:
        self.topology = topology
        self.run_id = run_id
        self.workdir = workdir

    # -- lifecycle ---------------------------------------------------------------------------
    @abc.abstractmethod
    def preflight(self) -> None:
        """Check this machine can run the lab (up() calls it before creating anything): a
        LabError whose message is one line saying what to do."""

    @abc.abstractmethod
    def up(self) -> None:
        """Create every network and node and wait until each node is healthy."""

    @abc.abstractmethod
    def down(self) -> None:
        """Remove everything this run created; safe to call twice and after a failed up."""

    def __enter__(self) -> Backend:
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    # -- commands ----------------------------------------------------------------------------
    def exec(
        self,
        node: str,
        argv: Sequence[str],
        *,
        timeout: float = 60.0,
        check: bool = False,
        input: bytes | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run argv on node and wait; stdout/stderr as text; a signal's status is 128+N, as a
        shell reports it. check=True raises LabError on a non-zero status; a command still
        running after `timeout` is killed and ExecTimeout raised."""
        done = self._run(node, argv, timeout=timeout, input=input)
        if check and done.returncode != 0:
            raise LabError(
                f"{node}: `{shlex.join(argv)}` exited with status {done.returncode}: "
                f"{tail(done.stderr or done.stdout) or '(no output)'}"
            )
        return done

    @abc.abstractmethod
    def _run(
        self, node: str, argv: Sequence[str], *, timeout: float, input: bytes | None
    ) -> subprocess.CompletedProcess[str]:
        """exec's work, without `check`: raises ExecTimeout when argv outlives timeout."""

    @abc.abstractmethod
    def spawn(self, node: str, argv: Sequence[str], *, name: str) -> Process:
        """Start a long-running program on node; its output goes to Process.log_path."""

    @abc.abstractmethod
    def signal(self, process: Process, sig: int = signal.SIGTERM) -> None:
        """Send sig to a spawned program (no error if it already exited)."""

    @abc.abstractmethod
    def wait(self, process: Process, timeout: float) -> int | None:
        """Wait for a spawned program to exit: its exit status, -N if signal N ended it (as
        subprocess reports), or None on timeout."""

    def stop(self, process: Process, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after timeout; the exit status."""
        self.signal(process, signal.SIGTERM)
        status = self.wait(process, timeout)
        if status is None:
            self.signal(process, signal.SIGKILL)
            status = self.wait(process, timeout)
        return status

    def logs(self, process: Process) -> str:
        try:
            return process.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- network -----------------------------------------------------------------------------
    @abc.abstractmethod
    def interface(self, node: str, network: str) -> str:
        """Name of node's interface on network (found by address, never assumed)."""

    def link_down(self, node: str, network: str) -> None:
        """Cut node's link to network (the tunnel's transport breaks, nothing else changes)."""
        self._set_link(node, network, "down")

    def set_sysctl(self, node: str, key: str, value: str) -> None:
        """Set a net.* sysctl in node's network namespace (containers see /proc/sys read-only,
        so backends do it from outside the node)."""
        if not key.startswith("net."):
            raise LabError(f"{node}: only net.* sysctls belong to a node, not {key}")
        self._write_sysctl(node, key, value)

    @abc.abstractmethod
    def _write_sysctl(self, node: str, key: str, value: str) -> None:
        """set_sysctl's work, the key already checked."""

    def link_up(self, node: str, network: str) -> None:
        """Restore what link_down cut."""
        self._set_link(node, network, "up")

    @abc.abstractmethod
    def _set_link(self, node: str, network: str, state: str) -> None:
        """Set the far end of node's link on network "down" or "up"; the node's own interface,
        addresses and routes stay as they are, as when a cable is pulled."""

    @abc.abstractmethod
    @contextlib.contextmanager
    def capture(self, network: str, name: str, bpf: str = "") -> Iterator[Capture]:
        """Capture every packet crossing network while the block runs; pcap kept under workdir."""

    # -- files and programs shared with nodes ----------------------------------------------------
    @abc.abstractmethod
    def node_path(self, host_path: Path) -> str:
        """Where a file under workdir is seen from inside a node (Docker mounts workdir at /lab)."""

    @abc.abstractmethod
    def vpn_argv(self) -> list[str]:
        """How to run the `vpn` command on a node (the image's, or this interpreter's module)."""

    # -- inspection --------------------------------------------------------------------------
    @abc.abstractmethod
    def host(self, node: str) -> testinfra.host.Host:
        """A testinfra Host whose commands run on node."""

    def host_pids(self, node: str) -> list[int] | None:
        """Host PIDs of the processes running on node (to read their /proc/PID/stat), or None
        when the runtime does not expose them."""
        return None

    def ensure(self, node: str, argv: Sequence[str], timeout: float = 60.0) -> str:
        """exec with check=True; stdout."""
        return self.exec(node, argv, timeout=timeout, check=True).stdout
