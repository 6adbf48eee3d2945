"""python -m bench.swarm_scale: N client containers spread over a swarm's engines, one gateway.

Unlike bench.scale (one load generator opening N sessions from one namespace), every client here
is its own container running the real `vpn client`, placed by the swarm backend's default (spread
over the engines; the gateway and LAN on the manager), so the tunnels cross VXLAN. The extra
clients are a compose file written for the run (compose/ is not touched); then:

- lab up: the time to create, start and health-check every container on every engine;
- handshakes per second: N ÷ the time from the first `vpn client` started to the gateway listing
  N sessions (it includes starting each client process through the engine's API);
- memory: the gateway server's RSS growth per session, and each client container's own memory
  (cgroup) and its vpn client's RSS, averaged over a sample;
- how many clients pinged a LAN host through their tunnel.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from bench.run import REPO_ROOT, RESULTS, machine
from lab.backends.base import Backend
from lab.model import LabError
from lab.run import running_lab
from scenarios.tunnel import Tunnel

FIRST_EXTRA = 20  # 10.9.0.20 on; the lab's own nodes use .5-.11
HEALTH = ["CMD-SHELL", "ip -4 -o addr show scope global | grep -q inet"]


def clients_file(count: int) -> Path:
    """A compose file adding count-1 clients to the lab's one (`client`) on `internet`."""
    if not 1 <= count <= 255 - FIRST_EXTRA:
        raise LabError(f"--clients {count}: the internet /24 holds 1 to {255 - FIRST_EXTRA}")
    client = {
        "image": "${VPNLAB_IMAGE:-vpnlab/node:latest}",
        "init": True,
        "volumes": ["${VPNLAB_WORKDIR:?must be the run work directory}:/lab"],
        "cap_add": ["NET_ADMIN"],
        "devices": ["/dev/net/tun:/dev/net/tun"],
        "healthcheck": {"test": HEALTH, "interval": "30s", "timeout": "5s", "retries": 3},
        "labels": {"vpnlab.role": "client"},
    }
    services = {
        f"c{index:03d}": {
            **client,
            "networks": {"internet": {"ipv4_address": f"10.9.0.{FIRST_EXTRA + index}"}},
        }
        for index in range(1, count)
    }
    path = REPO_ROOT / ".cache" / "bench-swarm" / f"clients-{count}.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"services": services}, sort_keys=False))
    return path


def _pid(backend: Backend, name: str) -> str:
    return (backend.workdir / "run" / f"{name}.pid").read_text().strip()


def rss_kb(backend: Backend, node: str, pid: str) -> int:
    out = backend.ensure(node, ["grep", "VmRSS", f"/proc/{pid}/status"], timeout=10)
    return int(out.split()[1])


def container_kb(backend: Backend, node: str) -> int:
    """The container's own memory (cgroup v2 memory.current, or v1 usage_in_bytes)."""
    probe = (
        "cat /sys/fs/cgroup/memory.current 2>/dev/null"
        " || cat /sys/fs/cgroup/memory/memory.usage_in_bytes"
    )
    return int(backend.ensure(node, ["sh", "-c", probe], timeout=10).split()[0]) // 1024


def sessions(backend: Backend, tunnel: Tunnel) -> int:
    """Sessions the gateway lists (0 while its status socket is too busy to answer)."""
    argv = [*backend.vpn_argv(), "status", "--json"]
    try:
        done = backend.exec(tunnel.gateway.name, argv, timeout=30)
        status = json.loads(done.stdout) if done.returncode == 0 else {}
    except (LabError, ValueError):
        return 0
    return len(status.get("clients") or [])


def measure(backend: Backend, count: int, timeout: float) -> dict[str, Any]:
    tunnel = Tunnel(backend)
    clients = tunnel.clients
    gateway = tunnel.gateway.name
    engines = {c: backend.engine_of(c) for c in clients}  # type: ignore[attr-defined]
    server = tunnel.start_server("--max-clients", str(count + 8), "--max-pending", str(count + 8))
    before = rss_kb(backend, gateway, _pid(backend, server.name))
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(tunnel.start_client, clients))
    spawned = time.monotonic() - started
    connected = 0
    while time.monotonic() - started < timeout:
        connected = sessions(backend, tunnel)
        if connected >= len(clients):
            break
        time.sleep(0.5)
    elapsed = time.monotonic() - started
    after = rss_kb(backend, gateway, _pid(backend, server.name))
    host = str(backend.topology.node(tunnel.hosts[0]).address("lan"))

    def pings(node: str) -> bool:
        return tunnel.ping(node, host, count=1, timeout=3)[0] or tunnel.ping(node, host)[0]

    with ThreadPoolExecutor(max_workers=8) as pool:
        answered = sum(pool.map(pings, clients))
    sample = clients[:: max(1, len(clients) // 10)]
    client_rss = [rss_kb(backend, c, _pid(backend, f"vpn-{c}")) for c in sample]
    boxes = [container_kb(backend, c) for c in sample]
    tunnel.stop_all()
    return {
        "clients": len(clients),
        "per_engine": {e: list(engines.values()).count(e) for e in sorted(set(engines.values()))},
        "connected": connected,
        "ping_passed": answered,
        "seconds_to_all_connected": round(elapsed, 2),
        "seconds_spawning_clients": round(spawned, 2),
        "handshakes_per_s": round(connected / elapsed, 1) if elapsed else None,
        "gateway_rss_kb_per_client": round((after - before) / max(connected, 1), 1),
        "client_vpn_rss_kb": round(statistics.mean(client_rss)),
        "client_container_kb": round(statistics.mean(boxes)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.swarm_scale", description=__doc__)
    parser.add_argument("--clients", type=int, default=200, help="client containers (≤ 235)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds for all to connect")
    parser.add_argument("--output", type=Path, default=RESULTS / "bench-swarm.json")
    args = parser.parse_args(argv)
    extra = clients_file(args.clients)
    say = lambda line: print(line, flush=True)  # noqa: E731
    started = time.monotonic()
    try:
        with running_lab("swarm", [str(extra)], progress=say) as backend:
            up = time.monotonic() - started
            result = {
                "lab_up_seconds": round(up, 1),
                **measure(backend, args.clients, args.timeout),
            }
    except LabError as exc:
        print(f"bench-swarm: {exc}", file=sys.stderr)
        return 1
    result["total_seconds"] = round(time.monotonic() - started, 1)
    result["machine"] = machine()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    for key, value in result.items():
        if key != "machine":
            print(f"  {key:28} {value}")
    print(f"bench-swarm: → {args.output}")
    return 0 if result["ping_passed"] == result["clients"] else 1


if __name__ == "__main__":
    sys.exit(main())
