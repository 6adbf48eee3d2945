"""What several scenarios check the same way: programs run on a node, continuous pings and the
outage they saw, ICMP in a capture, kernel counters and sysctls of a node, waiting for a state.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import re
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import dpkt

from lab.backends.base import Backend, Process
from lab.model import LabError
from scenarios.pcap import frames
from scenarios.runner import StepFailed
from scenarios.tunnel import Tunnel

T = TypeVar("T")


# -- programs on a node ----------------------------------------------------------------------
def node_python(backend: Backend, node: str) -> list[str]:
    """The interpreter that runs `vpn` on node, so that a program there can import `vpn`.

    `vpn_argv()` is either `PYTHON -m vpn` (netns: this interpreter, the repository on its path)
    or a console script (the image's `vpn`), whose #! line names the interpreter it runs with.
    """
    argv = backend.vpn_argv()
    if argv[-2:] == ["-m", "vpn"]:
        return argv[:-2]
    script = backend.ensure(node, ["sh", "-c", 'command -v "$1"', "sh", argv[0]]).strip()
    first = backend.ensure(node, ["head", "-n", "1", script]).strip()
    if not first.startswith("#!"):
        raise LabError(f"{node}: {script} has no #! line naming its Python interpreter")
    return first[2:].split()


def put_file(backend: Backend, name: str, text: str) -> str:
    """Write text under the run's work directory; its path as the nodes see it."""
    path = backend.workdir / "files" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return backend.node_path(path)


def program_argv(backend: Backend, node: str, name: str, source: str, *args: str) -> list[str]:
    """argv that runs `source` (Python) on node with the interpreter that has `vpn`."""
    return [*node_python(backend, node), put_file(backend, f"{name}.py", source), *args]


def run_json(
    backend: Backend, node: str, name: str, source: str, *args: str, timeout: float = 60
) -> dict[str, Any]:
    """Run a Python program on node; the JSON object it prints last."""
    done = backend.exec(node, program_argv(backend, node, name, source, *args), timeout=timeout)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise StepFailed(
            f"{name} on {node} exited {done.returncode}: {(done.stderr or done.stdout)[-1500:]}"
        )
    return json.loads(lines[-1])


# -- waiting ---------------------------------------------------------------------------------
def wait_until(what: str, probe: Callable[[], T], timeout: float = 15.0, step: float = 0.2) -> T:
    """probe() until it returns something true; that value (TimeoutError saying what, if not)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout:g} s (last: {value!r})")
        time.sleep(step)


# -- addresses -------------------------------------------------------------------------------
def lan_address(tunnel: Tunnel, host: str) -> tuple[str, str]:
    """(network, address) of host on a network the gateway pushes to its clients."""
    pushed = [ipaddress.ip_network(r) for r in tunnel.routes]
    for attachment in tunnel.backend.topology.node(host).attachments:
        if any(attachment.address in net for net in pushed):
            return attachment.network, str(attachment.address)
    raise LabError(f"{host} has no address on the networks pushed to clients ({tunnel.routes})")


# -- continuous ping -------------------------------------------------------------------------
_REPLY = re.compile(
    r"^\[(\d+\.\d+)\] \d+ bytes from [^:]+: icmp_seq=(\d+) .*time=([\d.]+) ms", re.M
)
_TRANSMITTED = re.compile(r"^(\d+) packets transmitted")


@dataclass
class PingStats:
    """What a `ping -D -O` run saw. An outage is the longest stretch without any reply beyond
    the normal spacing of the pings; a lost ping is one never answered (late answers count)."""

    sent: int
    answered: int
    lost: int
    late: int  # answered after more than a second (queued while the tunnel was down)
    outage_seconds: float
    longest_silence_seqs: tuple[int, int] = (0, 0)  # the last reply before it, the first after

    def __str__(self) -> str:
        return (
            f"{self.sent} sent, {self.answered} answered ({self.late} late), {self.lost} lost, "
            f"longest silence {self.outage_seconds:.2f} s after icmp_seq "
            f"{self.longest_silence_seqs[0]}"
        )


def _parse_timestamped_ping(text: str, interval: float) -> PingStats:
    """Read `ping -n -D -O` output (timestamps in brackets)."""
    replies: list[tuple[float, int]] = []
    late = 0
    sent = 0
    for line in text.splitlines():
        if match := _REPLY.match(line):
            replies.append((float(match[1]), int(match[2])))
            late += float(match[3]) > 1000
        elif match := _TRANSMITTED.match(line):
            sent = int(match[1])
    answered_seqs = {seq for _, seq in replies}
    if not replies:
        return PingStats(sent, 0, sent, 0, float("inf"))
    last_seq = max(answered_seqs)
    sent = sent or last_seq
    # pings after the last answer may still have been in flight when ping stopped
    lost = sum(1 for seq in range(1, last_seq + 1) if seq not in answered_seqs)
    gap, before, after = 0.0, replies[0][1], replies[0][1]
    for (t0, s0), (t1, s1) in itertools.pairwise(replies):
        if t1 - t0 > gap:
            gap, before, after = t1 - t0, s0, s1
    outage = max(0.0, gap - interval)
    return PingStats(sent, len(answered_seqs), lost, late, round(outage, 2), (before, after))


class ContinuousPing:
    """`ping -i INTERVAL` running in the background on a node, until stop()."""

    def __init__(
        self, backend: Backend, node: str, address: str, *, name: str, interval: float = 0.1
    ) -> None:
        self.backend = backend
        self.interval = interval
        argv = ["ping", "-n", "-D", "-O", "-i", f"{interval:g}", "-W", "1", address]
        self.process: Process = backend.spawn(node, argv, name=name)

    def answered(self) -> int:
        return len(_REPLY.findall(self.backend.logs(self.process)))

    def stop(self) -> PingStats:
        self.backend.signal(self.process, signal.SIGINT)  # ping prints its totals on SIGINT
        if self.backend.wait(self.process, 5) is None:
            self.backend.stop(self.process, timeout=2)
        return _parse_timestamped_ping(self.backend.logs(self.process), self.interval)


# -- what crossed a network ------------------------------------------------------------------
@dataclass(frozen=True)
class Echo:
    source: str
    destination: str
    reply: bool
    eth_destination: str  # MAC address, aa:bb:…


def _ip_frames(pcap: Path) -> Iterator[tuple[dpkt.ethernet.Ethernet, dpkt.ip.IP]]:
    for frame in frames(pcap):
        if isinstance(frame, dpkt.ethernet.Ethernet) and isinstance(frame.data, dpkt.ip.IP):
            yield frame, frame.data


def ip_sources(pcap: Path) -> list[str]:
    """The source address of every IPv4 packet in an Ethernet capture."""
    return [socket.inet_ntoa(packet.src) for _, packet in _ip_frames(pcap)]


def icmp_echoes(pcap: Path) -> list[Echo]:
    """Every ICMP echo request and reply in an Ethernet capture."""
    found = []
    for frame, packet in _ip_frames(pcap):
        icmp = packet.data
        if isinstance(icmp, dpkt.icmp.ICMP) and icmp.type in (
            dpkt.icmp.ICMP_ECHO,
            dpkt.icmp.ICMP_ECHOREPLY,
        ):
            found.append(
                Echo(
                    socket.inet_ntoa(packet.src),
                    socket.inet_ntoa(packet.dst),
                    icmp.type == dpkt.icmp.ICMP_ECHOREPLY,
                    ":".join(f"{b:02x}" for b in frame.dst),
                )
            )
    return found


# -- a node's kernel -------------------------------------------------------------------------
def snmp(backend: Backend, node: str, group: str = "Ip") -> dict[str, int]:
    """One group of node's kernel counters (/proc/net/snmp: Ip InAddrErrors, Icmp InEchos…)."""
    rows = [
        line.split()[1:]
        for line in backend.ensure(node, ["cat", "/proc/net/snmp"]).splitlines()
        if line.startswith(f"{group}:")
    ]
    return {k: int(v) for k, v in zip(rows[0], rows[1], strict=True)}


def set_sysctl(backend: Backend, node: str, key: str, value: str) -> str:
    """Set a net.* sysctl of node's network namespace; how it was done (for the step's detail).

    A container sees /proc/sys read-only (Docker mounts it so; only `--sysctl` at creation sets
    them), so the backend writes it from outside the node, in the node's namespace only.
    """
    backend.set_sysctl(node, key, value)
    return f"{key}={value} set in {node}'s network namespace"


def read_sysctl(backend: Backend, node: str, key: str) -> str:
    return backend.ensure(node, ["sysctl", "-n", key]).strip()
