"""What the fault and path scenarios share: the tunnel brought up step by step, programs run on
nodes, TCP streams checked on arrival, ping read into numbers, a step recorded as skipped.

Addresses always come from the topology; nothing here names a node but through its arguments.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from lab.backends.base import Backend, Process
from scenarios.lab_checks import program_argv
from scenarios.runner import Context, StepFailed
from scenarios.tunnel import Tunnel


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


@dataclass
class Up:
    """A lab with the tunnel up: the lab's first client connected, and the LAN host it talks to."""

    tunnel: Tunnel
    client: str
    host: str
    target: str  # the host's LAN address
    status: dict[str, Any]  # the client's `vpn status`

    @property
    def backend(self) -> Backend:
        return self.tunnel.backend


@contextlib.contextmanager
def tunnel_up(ctx: Context) -> Iterator[Up]:
    """Server and first client started as steps; every process stopped when the block ends."""
    tunnel = Tunnel(ctx.backend)
    client, host = tunnel.clients[0], tunnel.hosts[0]
    try:
        status = connect(ctx, tunnel, client)[client]
        yield Up(tunnel, client, host, address(ctx.backend, host), status)
    finally:
        tunnel.stop_all()


def skip_step(ctx: Context, name: str, reason: str) -> None:
    """A step the machine cannot do (e.g. no netem): recorded and shown as skipped — neither
    passed nor failed."""
    ctx.skip(name, reason)


# -- programs on nodes ---------------------------------------------------------------------------
def program(backend: Backend, name: str, source: str) -> list[str]:
    """The argv that runs a Python program on the lab's nodes (they share one interpreter)."""
    any_node = next(iter(backend.topology.nodes))
    return program_argv(backend, any_node, name, source)


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
STREAM_PORT = 5201

# A TCP stream of N bytes of a known pattern (byte i is i % 256), checked byte for byte on
# arrival. `listen-*` binds ADDRESS:PORT and takes one connection, `connect-*` dials it; the
# receiving end prints a JSON report.
STREAM = """\
import json, socket, sys, time
role, host, port, total = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
pattern = bytes(range(256)) * 512
if role.startswith("listen"):
    server = socket.create_server((host, port))
    print("listening", flush=True)
    sock, _ = server.accept()
else:
    sock = socket.create_connection((host, port), timeout=10)
    sock.settimeout(None)
started = time.monotonic()
if role.endswith("send"):
    left = total
    while left:
        chunk = memoryview(pattern)[: min(left, 65536)]
        sock.sendall(chunk)
        left -= len(chunk)
    sock.shutdown(socket.SHUT_WR)
    sock.recv(1)  # the receiver closes once it has everything
else:
    got, intact = 0, True
    while chunk := sock.recv(65536):
        start = got % 256
        intact = intact and chunk == pattern[start : start + len(chunk)]
        got += len(chunk)
    seconds = time.monotonic() - started
    print(json.dumps({"bytes": got, "intact": intact, "seconds": round(seconds, 3),
                      "mbit": round(got * 8 / seconds / 1e6, 2)}), flush=True)
sock.close()
"""


@dataclass
class Stream:
    bytes: int  # arrived at the receiver
    intact: bool  # every byte as sent, in order
    seconds: float
    mbit: float


def stream(
    tunnel: Tunnel, client: str, host: str, total: int, *, upload: bool, timeout: float = 60
) -> Stream:
    """Send total bytes over TCP between client and host's LAN address, through the tunnel:
    client → host when upload, else host → client; the receiver's report."""
    backend = tunnel.backend
    argv = program(backend, "stream", STREAM)
    target = [address(backend, host), str(STREAM_PORT), str(total)]
    roles = ("listen-recv", "connect-send") if upload else ("listen-send", "connect-recv")
    listener = backend.spawn(
        host, [*argv, roles[0], *target], name=f"stream-{len(tunnel.processes)}"
    )
    tunnel.processes[listener.name] = listener  # stopped with the rest, whatever happens
    tunnel.wait_log(listener, "listening", "the stream's listener")
    done = backend.exec(client, [*argv, roles[1], *target], timeout=timeout)
    if done.returncode != 0:
        raise StepFailed(f"stream {roles[1]} on {client}: {(done.stderr or done.stdout)[-500:]}")
    heard = finish(backend, listener, 10)
    return Stream(**last_json(heard if upload else done.stdout))
