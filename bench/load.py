"""python -m bench.load: --clients sessions pinging through one gateway for --minutes.

The netns lab's gateway runs `vpn server`; `bench.loadgen --ping-interval` in the client's
namespace opens the sessions (real TLS 1.3, one certificate each: bench.scale's cache) and sends
one echo request per session per interval to the gateway's tunnel address. Measured: sessions
lost (connected, then closed before the end), pings sent, answered and lost, and the gateway's
resident memory sampled every --sample seconds. Memory is flat when the last quarter of the run
averages within --flat-percent of the first quarter after the ramp. Prints the figures and
writes results/load.json; exit status 1 when sessions were lost, pings lost beyond
--max-loss-percent, or memory grew.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench.measure import BenchError, find_pids
from bench.run import RESULTS
from bench.scale import CACHE, POOL, PREFIX, _wait_file, rss_kb, scale_pki
from lab.backends.base import Backend
from lab.model import LabError
from lab.run import running_lab
from scenarios.tunnel import Tunnel


def run_load(backend: Backend, args: argparse.Namespace) -> dict[str, Any]:
    tunnel = Tunnel(backend)
    gateway, client = tunnel.gateway.name, tunnel.clients[0]
    print(f"certificates: {args.clients} clients in {CACHE}", flush=True)
    lab = scale_pki(CACHE, gateway, tunnel.server_address, args.clients)
    state = backend.workdir / "load"
    state.mkdir(parents=True, exist_ok=True)
    out = state / "result.json"
    files = {k: backend.node_path(Path(lab[k])) for k in ("ca", "crl", "server", "server.key")}
    server = tunnel.start_server(
        "--ca", files["ca"], "--crl", files["crl"],
        "--cert", files["server"], "--key", files["server.key"],
        "--pool", POOL, "--max-clients", str(args.clients + 16),
        "--keepalive", "5", "--dead-peer", "30",
        # every session comes from the generator's one address: the per-source cap on
        # connections not yet logged in (16) must leave room for its handshakes in flight
        "--max-pending-per-source", "64",
        name="vpn-server-load",
    )  # fmt: skip
    seconds = args.minutes * 60
    try:
        (pid,) = find_pids(backend, gateway, "-m", "vpn", "server")
        rss_start = rss_kb(pid)
        argv = [
            sys.executable, "-m", "bench.loadgen",
            "--server", f"{tunnel.server_address}:{tunnel.port}", "--server-name", gateway,
            "--ca", files["ca"], "--certs", backend.node_path(Path(lab["dir"])),
            "--prefix", PREFIX, "--clients", str(args.clients), "--concurrency", "32",
            "--size", "84", "--seconds", f"{seconds:g}", "--ping-interval", f"{args.interval:g}",
            "--state", backend.node_path(state), "--out", backend.node_path(out),
        ]  # fmt: skip
        generator = backend.spawn(client, argv, name="loadgen-load")
        try:
            connected = _wait_file(state / "connected.json", backend, generator, 120 + args.clients)
            print(f"{connected['connected']}/{args.clients} connected", flush=True)
            (state / "go").touch()
            began = time.monotonic()
            samples: list[tuple[float, float]] = []
            while backend.wait(generator, 0) is None and time.monotonic() - began < seconds + 90:
                samples.append((round(time.monotonic() - began, 1), round(rss_kb(pid) / 1024, 1)))
                if len(samples) % 6 == 1:
                    print(
                        f"  t={samples[-1][0]:6.0f} s  gateway RSS {samples[-1][1]} MB", flush=True
                    )
                time.sleep(args.sample)
            if not out.exists():
                raise BenchError(f"no result from the load generator: {backend.logs(generator)}")
            result = json.loads(out.read_text())
        finally:
            backend.stop(generator, timeout=5)
        alive_at_end = server_sessions(tunnel)
    finally:
        backend.stop(server, timeout=10)
    return summarize(result, samples, rss_start, alive_at_end, args)


def server_sessions(tunnel: Tunnel) -> int:
    status = tunnel.status(tunnel.gateway.name)
    return len(status.get("clients", [])) if status else -1


def summarize(
    result: dict[str, Any],
    samples: list[tuple[float, float]],
    rss_start_kb: int,
    gateway_sessions_at_end: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    sent, answered = result["pings_sent"], result["pings_answered"]
    steady = [mb for t, mb in samples if t >= min(60.0, args.minutes * 15)] or [
        mb for _, mb in samples
    ]
    quarter = max(1, len(steady) // 4)
    first, last = statistics.mean(steady[:quarter]), statistics.mean(steady[-quarter:])
    growth = round(100 * (last - first) / first, 2) if first else 0.0
    return {
        "clients": result["clients"],
        "connected": result["connected"],
        "connect_failures": result["failed"],
        "failures": result["failures"],
        "sessions_lost": result["connected"] - result["alive_after"],
        "closed_reasons": result["closed_reasons"],
        "gateway_sessions_after_generator_stopped": gateway_sessions_at_end,
        "minutes": args.minutes,
        "ping_interval_s": args.interval,
        "pings_sent": sent,
        "pings_answered": answered,
        "pings_lost": sent - answered,
        "ping_loss_percent": round(100 * (sent - answered) / sent, 4) if sent else 100.0,
        "gateway_rss_mb_before": round(rss_start_kb / 1024, 1),
        "gateway_rss_mb_first_quarter": round(first, 1),
        "gateway_rss_mb_last_quarter": round(last, 1),
        "gateway_rss_growth_percent": growth,
        "memory_flat": abs(growth) <= args.flat_percent,
        "rss_samples": samples,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between pings")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between RSS samples")
    parser.add_argument("--flat-percent", type=float, default=5.0)
    parser.add_argument("--max-loss-percent", type=float, default=0.1)
    parser.add_argument("--out", type=Path, default=RESULTS / "load.json")
    args = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.clients + 1024:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.clients + 1024), hard))
    try:
        with running_lab("netns", progress=lambda t: print(t, flush=True)) as backend:
            got = run_load(backend, args)
    except (BenchError, LabError) as exc:
        print(f"bench.load: {exc}", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(got, indent=2) + "\n")
    print(
        f"load: {got['connected']}/{got['clients']} sessions, {got['sessions_lost']} lost; "
        f"{got['pings_sent']} pings, {got['pings_lost']} lost ({got['ping_loss_percent']} %); "
        f"gateway RSS {got['gateway_rss_mb_first_quarter']} → "
        f"{got['gateway_rss_mb_last_quarter']} MB ({got['gateway_rss_growth_percent']:+} %, "
        f"{'flat' if got['memory_flat'] else 'GROWING'}) over {got['minutes']:g} min → {args.out}"
    )
    bad = got["sessions_lost"] or got["ping_loss_percent"] > args.max_loss_percent
    return 1 if bad or not got["memory_flat"] else 0


if __name__ == "__main__":
    sys.exit(main())
