"""What the fault and path scenarios share: the tunnel brought up step by step, programs run on
nodes, iperf3 and ping read into numbers, a step recorded as skipped, a pcap's fragments counted.

Addresses always come from the topology; nothing here names a node but through its arguments.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.backend import Backend, Process
from scenarios.pcap import _ip_packets
from scenarios.runner import SKIP, Context, Step, StepFailed
from scenarios.tunnel import Tunnel

IPERF_PORT = 5201


def address(backend: Backend, node: str, network: str = "lan") -> str:
    return str(backend.topology.node(node).address(network))


def vpn_address(status: dict[str, Any]) -> str:
    """The client's own tunnel address, without its prefix length."""
    return str(status["address"]).split("/")[0]


def connect(
    ctx: Context, tunnel: Tunnel, *clients: str, server_flags: Sequence[str] = ()
) -> dict[str, dict[str, Any]]:
    """Start the server, then each client (default: the lab's first), as steps; their status."""
    with ctx.step("VPN server listening on the gateway") as step:
        tunnel.start_server(*server_flags)
        step.detail = f"{tunnel.server_address}:{tunnel.port}, pool {tunnel.pool}"
    statuses = {}
    for client in clients or tunnel.clients[:1]:
        with ctx.step(f"{client} connected, tunnel up") as step:
            tunnel.start_client(client)
            statuses[client] = tunnel.wait_connected(client)
            step.detail = f"{client} got {statuses[client]['address']} on {statuses[client]['tun']}"
    return statuses


def skip_step(ctx: Context, name: str, reason: str) -> None:
    """A step the machine cannot do (e.g. no netem): recorded and shown as skipped, not failed."""
    ctx.result.steps.append(Step(name, passed=True, detail=f"skipped: {reason}"))
    ctx.out(f"  {SKIP} {name} — skipped: {reason}")


# -- programs on nodes ---------------------------------------------------------------------------
def program(backend: Backend, name: str, source: str) -> list[str]:
    """Write a Python program under the run's work directory; the argv that runs it on a node."""
    path = backend.workdir / "programs" / f"{name}.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)
    return ["python3", backend.node_path(path)]


def finish(backend: Backend, process: Process, timeout: float) -> str:
    """Wait for a spawned program to end by itself; its output. Fails if it does not, or fails."""
    status = backend.wait(process, timeout)
    log = backend.logs(process)
    if status is None:
        backend.stop(process, timeout=2)
        raise StepFailed(f"{process.name} on {process.node} still running after {timeout:g} s")
    if status != 0:
        raise StepFailed(f"{process.name} on {process.node} exited {status}: {log.strip()[-500:]}")
    return log


def last_json(text: str) -> dict[str, Any]:
    """The last line of a program's output that is a JSON object (its report)."""
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise StepFailed(f"no JSON report in the program's output: {text.strip()[-500:]!r}")


# -- measuring -----------------------------------------------------------------------------------
@dataclass
class Iperf:
    mbit: float  # goodput at the receiving end
    bytes: int
    seconds: float
    retransmits: int


def iperf(tunnel: Tunnel, client: str, server: str, *flags: str, timeout: float = 60) -> Iperf:
    """iperf3 from client to server's LAN address through the tunnel (-R: the other way)."""
    backend = tunnel.backend
    target = address(backend, server)
    listener = backend.spawn(
        server,
        ["iperf3", "-s", "-1", "--forceflush", "-B", target, "-p", str(IPERF_PORT)],
        name=f"iperf-{server}-{len(tunnel.processes)}",
    )
    tunnel.processes[listener.name] = listener  # stopped with the rest, whatever happens
    tunnel.wait_log(listener, "Server listening", "iperf3 to listen")
    argv = ["iperf3", "-c", target, "-p", str(IPERF_PORT), "-J", *flags]
    done = backend.exec(client, argv, timeout=timeout)
    backend.stop(listener, timeout=2)
    try:
        report = json.loads(done.stdout)
    except ValueError:
        report = {"error": (done.stderr or done.stdout).strip()[-300:]}
    if done.returncode != 0 or "error" in report:
        raise StepFailed(f"`{shlex.join(argv)}` on {client}: {report.get('error')}")
    received = report["end"]["sum_received"]
    return Iperf(
        mbit=round(received["bits_per_second"] / 1e6, 2),
        bytes=int(received["bytes"]),
        seconds=round(received["seconds"], 2),
        retransmits=int(report["end"]["sum_sent"].get("retransmits", 0)),
    )


@dataclass
class Ping:
    ok: bool  # every echo answered
    transmitted: int
    received: int
    loss: float  # percent
    rtt_avg_ms: float | None
    output: str  # stdout and stderr, for what ping said about errors

    @property
    def summary(self) -> str:
        return f"{self.received}/{self.transmitted} answered, {self.loss:g}% loss"


def ping(
    backend: Backend,
    node: str,
    target: str,
    *flags: str,
    count: int = 1,
    size: int | None = None,
    wait: float = 2,
) -> Ping:
    """ping with its numbers read; flags e.g. ("-M", "do")."""
    argv = ["ping", "-n", "-c", str(count), "-i", "0.2", "-W", f"{wait:g}", *flags]
    if size is not None:
        argv += ["-s", str(size)]
    done = backend.exec(node, [*argv, target], timeout=count * 0.2 + wait + 10)
    return parse_ping(done)


def parse_ping(done: subprocess.CompletedProcess[str]) -> Ping:
    text = done.stdout + done.stderr
    counts = re.search(r"(\d+) packets transmitted, (\d+) received", text)
    loss = re.search(r"([\d.]+)% packet loss", text)
    rtt = re.search(r"= [\d.]+/([\d.]+)/", text)
    return Ping(
        ok=done.returncode == 0,
        transmitted=int(counts[1]) if counts else 0,
        received=int(counts[2]) if counts else 0,
        loss=float(loss[1]) if loss else 100.0,
        rtt_avg_ms=float(rtt[1]) if rtt else None,
        output=text.strip(),
    )


def fragments(pcap: Path, protocol: int) -> int:
    """IPv4 fragments (more-fragments flag or an offset) of one IP protocol in a capture."""
    count = 0
    for packet in _ip_packets(pcap):
        if getattr(packet, "p", None) == protocol and (packet.mf or packet.offset):
            count += 1
    return count
