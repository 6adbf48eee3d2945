"""python -m bench.soak: many lab up/down cycles per backend, then what was left behind.

Each cycle brings the lab up (compose/lab.yml) and takes it down. Every --fault-every-th cycle
also starts the VPN and SIGKILLs the gateway's server while a client is connected; the cycle
after that one cuts the client's link (down, then up) under a live tunnel. After the cycles it
counts what the runs left, by their own names (other labs on the machine are not counted):
namespaces, host links and the host routes through them, containers, networks, processes. Every
count must be 0. Prints the figures and writes results/soak.json; exit status 1 on a leftover
or a failed cycle.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from lab.backends.base import Backend
from lab.model import LabError
from lab.run import running_lab
from scenarios.tunnel import Tunnel

REPO = Path(__file__).resolve().parent.parent


def _lines(argv: list[str]) -> list[str]:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line for line in done.stdout.splitlines() if line.strip()]


def leftovers(runs: list[dict[str, str]]) -> dict[str, list[str]]:
    """What of these runs still exists: namespaces, links, routes, containers, networks, pids."""
    runs = [r for r in runs if r.get("run_id")]  # a cycle that failed before its lab existed
    prefixes = [r["prefix"] for r in runs if r.get("prefix")]
    projects = [f"vpnlab-{r['run_id']}" for r in runs if r["backend"] == "docker"]
    workdirs = [r["workdir"] for r in runs]
    mine = [*prefixes, *projects, *workdirs]

    def ours(text: str, names: list[str]) -> bool:
        return any(name in text for name in names)

    namespaces = [n.split()[0] for n in _lines(["ip", "netns", "list"]) if ours(n, prefixes)]
    links = [line.split(":")[1].strip() for line in _lines(["ip", "-o", "link"])]
    links = [name.split("@")[0] for name in links if ours(name, prefixes)]
    routes = [
        r for r in _lines(["ip", "route", "show", "table", "all"]) if ours(r, links or ["\0"])
    ]
    containers, networks = [], []
    if projects:
        containers = [
            c for c in _lines(["docker", "ps", "-a", "--format", "{{.Names}}"]) if ours(c, projects)
        ]
        networks = [
            n
            for n in _lines(["docker", "network", "ls", "--format", "{{.Name}}"])
            if ours(n, projects)
        ]
    processes = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if ours(cmdline, mine) and "bench.soak" not in cmdline:
            processes.append(f"{proc.name} {cmdline[:120]}")
    return {
        "namespaces": namespaces,
        "links": links,
        "routes": routes,
        "containers": containers,
        "networks": networks,
        "processes": processes,
    }


def gateway_kill(backend: Backend) -> str:
    """The VPN up, a client connected, the server SIGKILLed; every VPN process stopped."""
    tunnel = Tunnel(backend)
    client = tunnel.clients[0]
    try:
        server = tunnel.start_server()
        tunnel.start_client(client)
        tunnel.wait_connected(client)
        backend.signal(server, signal.SIGKILL)
        if backend.wait(server, 10) is None:
            raise LabError("the gateway's server outlived SIGKILL")
        return "gateway killed"
    finally:
        tunnel.stop_all()


def link_cut(backend: Backend) -> str:
    """The client's link cut under a live tunnel, then restored; the tunnel comes back."""
    tunnel = Tunnel(backend)
    client = tunnel.clients[0]
    try:
        tunnel.start_server()
        tunnel.start_client(client)
        tunnel.wait_connected(client)
        backend.link_down(client, tunnel.network)
        time.sleep(1.0)
        backend.link_up(client, tunnel.network)
        tunnel.wait_connected(client, timeout=30)
        return "link cut and restored"
    finally:
        tunnel.stop_all()


def cycle(backend_name: str, index: int, fault_every: int) -> dict[str, Any]:
    started = time.monotonic()
    record: dict[str, Any] = {"backend": backend_name, "cycle": index}
    try:
        with running_lab(backend_name) as backend:
            record.update(run_id=backend.run_id, workdir=str(backend.workdir))
            record["prefix"] = getattr(backend, "prefix", "")
            if fault_every and index % fault_every == fault_every - 1:
                record["fault"] = gateway_kill(backend)
            elif fault_every and index % fault_every == 0 and index:
                record["fault"] = link_cut(backend)
        record["ok"] = True
    except (LabError, OSError) as exc:
        record["ok"], record["error"] = False, str(exc)[-500:]
    record["seconds"] = round(time.monotonic() - started, 2)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--backend", action="append", choices=["netns", "docker"])
    parser.add_argument("--cycles", type=int, default=100, help="cycles per backend (100)")
    parser.add_argument(
        "--docker-cycles", type=int, help="cycles on docker if different (default: --cycles)"
    )
    parser.add_argument("--fault-every", type=int, default=10, help="a kill and a cut per N")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "soak.json")
    args = parser.parse_args(argv)
    summary: dict[str, Any] = {"backends": {}}
    failed = 0
    for name in args.backend or ["netns", "docker"]:
        count = args.docker_cycles if name == "docker" and args.docker_cycles else args.cycles
        began = time.monotonic()
        runs = []
        for index in range(count):
            runs.append(run := cycle(name, index, args.fault_every))
            mark = "✓" if run["ok"] else "✗"
            print(f"  {mark} {name} {index + 1}/{count} {run.get('fault', '')} {run['seconds']} s"
                  f"{' — ' + run['error'] if not run['ok'] else ''}", flush=True)  # fmt: skip
        left = leftovers(runs)
        seconds = round(time.monotonic() - began, 1)
        faults = [r.get("fault", "") for r in runs]
        summary["backends"][name] = {
            "cycles": count,
            "failed_cycles": sum(not r["ok"] for r in runs),
            "gateway_kills": faults.count("gateway killed"),
            "link_cuts": faults.count("link cut and restored"),
            "seconds": seconds,
            "leftovers": {k: len(v) for k, v in left.items()},
            "leftover_names": {k: v[:20] for k, v in left.items() if v},
            "errors": [r["error"] for r in runs if not r["ok"]][:10],
        }
        got = summary["backends"][name]
        failed += got["failed_cycles"] + sum(got["leftovers"].values())
        print(
            f"soak {name}: {count} cycles ({got['failed_cycles']} failed, "
            f"{got['gateway_kills']} gateway kills, {got['link_cuts']} link cuts) in {seconds} s; "
            f"left behind: " + ", ".join(f"{k} {v}" for k, v in got["leftovers"].items()),
            flush=True,
        )
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"→ {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
