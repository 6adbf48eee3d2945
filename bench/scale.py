"""python -m bench.scale: one gateway, many clients — handshakes, memory, throughput, fairness.

For each client count N (default 50, 200, 1000): a fresh `vpn server` on the lab's gateway,
then `bench.loadgen` in the client's namespace opens N real TLS sessions (N certificates from
the lab CA, issued once and cached in .cache/) and keeps echo requests flowing through each.
Measured:

- handshakes per second: N ÷ the time from the first connect to the last CONFIG, with at most
  --concurrency handshakes in flight (the generator's CPU is shared with the gateway's);
- gateway memory per client: (the server's RSS with N sessions − its RSS before) ÷ N, when
  the sessions are connected and idle, and again after the traffic;
- aggregate throughput: IP bytes of echo requests answered per second over all sessions
  (each crosses the tunnel twice, request and reply), and the gateway's CPU while it ran;
- fairness: Jain's index over the per-session rates (1.0 = every session got the same).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

from bench.measure import BenchError, cpu_seconds, find_pids
from bench.run import REPO_ROOT, RESULTS, machine
from lab.backends.base import Backend
from lab.model import LabError
from lab.run import running_lab
from scenarios.tunnel import Tunnel
from vpn.credentials import pki

CACHE = REPO_ROOT / ".cache" / "bench-scale-pki"
POOL = "172.31.0.0/20"  # room for 4093 clients, apart from the lab's networks
PREFIX = "load"


def scale_pki(directory: Path, server_name: str, server_address: str, count: int) -> dict:
    """A CA, a gateway certificate and `count` client certificates; kept between runs."""
    lab = pki.lab_pki(directory, server_name=server_name, server_sans=(server_address,), clients=())
    have = {entry["name"] for entry in pki.list_certs(directory)}
    for index in range(count):
        name = f"{PREFIX}{index:04d}"
        if name not in have:
            pki.issue(directory, name, "client")
    return lab


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchError(f"process {pid} has no VmRSS")


def _wait_file(path: Path, backend: Backend, process: Any, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while not path.exists():
        status = backend.wait(process, 0)
        if status is not None:
            raise BenchError(
                f"load generator exited with status {status}: {backend.logs(process)[-1500:]}"
            )
        if time.monotonic() > deadline:
            raise BenchError(f"no {path.name} from the load generator within {timeout:g} s")
        time.sleep(0.05)
    return json.loads(path.read_text())


def one_size(
    backend: Backend, tunnel: Tunnel, lab: dict, clients: int, args: argparse.Namespace
) -> dict[str, Any]:
    gateway, client = tunnel.gateway.name, tunnel.clients[0]
    state = backend.workdir / f"scale-{clients}"
    state.mkdir(parents=True, exist_ok=True)
    out = state / "result.json"
    files = {k: backend.node_path(Path(lab[k])) for k in ("ca", "crl", "server", "server.key")}
    server = tunnel.start_server(
        "--ca", files["ca"], "--crl", files["crl"],
        "--cert", files["server"], "--key", files["server.key"],
        "--pool", POOL, "--max-clients", str(clients + 16),
        "--keepalive", "5", "--dead-peer", "30",
        # every session comes from the generator's one address: the per-source cap on
        # connections not yet logged in (16) must leave room for its handshakes in flight
        "--max-pending-per-source", "64",
        name=f"vpn-server-{clients}",
    )  # fmt: skip
    try:
        (pid,) = find_pids(backend, gateway, "-m", "vpn", "server")
        time.sleep(0.3)
        rss_before = rss_kb(pid)
        argv = [
            sys.executable, "-m", "bench.loadgen",
            "--server", f"{tunnel.server_address}:{tunnel.port}", "--server-name", gateway,
            "--ca", files["ca"], "--certs", backend.node_path(Path(lab["dir"])),
            "--prefix", PREFIX, "--clients", str(clients),
            "--concurrency", str(args.concurrency), "--window", str(args.window),
            "--size", str(args.size), "--seconds", f"{args.seconds:g}",
            "--state", backend.node_path(state), "--out", backend.node_path(out),
        ]  # fmt: skip
        generator = backend.spawn(client, argv, name=f"loadgen-{clients}")
        try:
            connected = _wait_file(state / "connected.json", backend, generator, 60 + clients / 5)
            time.sleep(0.5)
            rss_idle = rss_kb(pid)
            (state / "go").touch()
            # the gateway's CPU over the middle of the traffic phase (not its ramp or end)
            margin = min(0.5, args.seconds / 4)
            time.sleep(margin)
            cpu_before, wall_before = cpu_seconds(pid), time.monotonic()
            time.sleep(args.seconds - 2 * margin)
            gateway_cpu = cpu_seconds(pid) - cpu_before
            wall = time.monotonic() - wall_before
            rss_after = rss_kb(pid)  # still serving every session
            if backend.wait(generator, args.seconds + 60) is None:
                raise BenchError(f"load generator still running after {args.seconds + 60:g} s")
            if not out.exists():
                raise BenchError(
                    f"load generator wrote no result: {backend.logs(generator)[-1500:]}"
                )
            result = json.loads(out.read_text())
        finally:
            backend.stop(generator, timeout=5)
        connected_n = max(1, connected["connected"])
        return {
            **result,
            "gateway_rss_mb_before": round(rss_before / 1024, 1),
            "gateway_rss_mb_connected": round(rss_idle / 1024, 1),
            "gateway_rss_mb_after_traffic": round(rss_after / 1024, 1),
            "memory_per_client_kb": round((rss_idle - rss_before) / connected_n, 1),
            "memory_per_client_after_traffic_kb": round((rss_after - rss_before) / connected_n, 1),
            "gateway_cpu_percent": round(100 * gateway_cpu / max(wall, 1e-9), 1),
        }
    finally:
        backend.stop(server, timeout=10)


def table(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| clients | connected | handshakes/s | memory/client KB (idle / after traffic) "
        "| aggregate Mbit/s | per session Mbit/s min / median / max | Jain fairness "
        "| gateway CPU % |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        s = r["per_session_mbps"]
        lines.append(
            f"| {r['clients']} | {r['connected']} | {r['handshakes_per_s']:.0f} | "
            f"{r['memory_per_client_kb']:.0f} / {r['memory_per_client_after_traffic_kb']:.0f} | "
            f"{r['aggregate_mbps']:.0f} | {s['min']:.2f} / {s['median']:.2f} / {s['max']:.2f} | "
            f"{r['fairness_jain']:.3f} | {r['gateway_cpu_percent']:.0f} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scale",
        description="many clients against one gateway (see the module's docstring)",
    )
    parser.add_argument("--clients", default="50,200,1000", help="client counts, comma-separated")
    parser.add_argument("--seconds", type=float, default=5.0, help="traffic phase per count")
    parser.add_argument("--window", type=int, default=4, help="echo requests in flight each")
    parser.add_argument("--size", type=int, default=1400, help="IP size of each echo request")
    parser.add_argument("--concurrency", type=int, default=32, help="handshakes in flight")
    parser.add_argument("--output", type=Path, default=RESULTS / "bench-scale.json")
    args = parser.parse_args(argv)
    try:
        args.counts = [int(c) for c in args.clients.split(",") if c.strip()]
    except ValueError:
        parser.error(f"--clients {args.clients!r}: comma-separated numbers, e.g. 50,200,1000")
    if not args.counts or min(args.counts) < 1 or max(args.counts) > 4000:
        parser.error("--clients: each count between 1 and 4000 (the pool is a /20)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = max(args.counts) + 1024
    if soft < needed:  # the gateway inherits it: one socket per client
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, needed), hard))
    info = machine()
    runs = []
    try:
        with running_lab("netns", progress=lambda t: print(t, flush=True)) as backend:
            tunnel = Tunnel(backend)
            print(f"certificates: {max(args.counts)} clients in {CACHE}", flush=True)
            lab = scale_pki(CACHE, tunnel.gateway.name, tunnel.server_address, max(args.counts))
            for count in args.counts:
                print(f"{count} clients …", flush=True)
                run = one_size(backend, tunnel, lab, count, args)
                runs.append(run)
                print(
                    f"  {run['connected']}/{count} connected, {run['handshakes_per_s']:.0f} "
                    f"handshakes/s, {run['memory_per_client_kb']:.0f} KB/client, "
                    f"{run['aggregate_mbps']:.0f} Mbit/s, Jain {run['fairness_jain']:.3f}",
                    flush=True,
                )
    except (BenchError, LabError) as exc:
        print(f"bench.scale: {exc}", file=sys.stderr)
        return 1
    results = {
        "runs": runs,
        "settings": {k: v for k, v in vars(args).items() if k not in ("output", "counts")},
        "machine": info,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(table(runs))
    print(f"\nresults: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
