"""A real two-engine Docker swarm on one machine, for the tests and CI: `make swarm-up/-down`.

The host's engine becomes the manager; a second dockerd runs in its own network namespace,
joined to the host by a veth pair on a private /30 no lab uses, and joins as a worker. The two
engines then reach each other's containers over VXLAN exactly as two machines would. The
second engine is entered with `nsenter --net` (not `ip netns exec`, which remounts /sys and
hides the cgroup mounts dockerd needs), and shares /dev/net/tun and the filesystem (so bind
mounts of a run's work directory work on both).

Everything created is written first to a record (/var/lib/vpnlab-swarm/cluster.json: on the
host, like the namespace, veth and engine it names, so any checkout finds it), so `down()` —
`make swarm-down`, and `make down`, and the next `up()` — removes it also after a crash: the
swarm left on both engines, the second dockerd stopped by its pid (and the shims it left), its
mounts, directories, veth and namespace removed.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab.model import LabError
from lab.model.records import REPO_ROOT
from lab.procfs import start_time

NETNS = "vpnlab-swarm1"
HOST_VETH, WORKER_VETH = "vlswarm0", "vlswarm1"
# A private /30 apart from every lab subnet in compose/*.yml (10.9.0.0/24, 192.168.50-60.0/24).
HOST_ADDRESS, WORKER_ADDRESS, PREFIX = "10.250.0.1", "10.250.0.2", 30
WORKER = "worker1"
MANAGER = "manager"
LOCAL_ENGINE = "unix:///var/run/docker.sock"
STATE_ROOT = Path("/var/lib/vpnlab-swarm")
DATA_ROOT = STATE_ROOT / WORKER
EXEC_ROOT = Path("/run/vpnlab-swarm") / WORKER  # short: containerd's socket path lives here

Progress = Callable[[str], None]


def record_path() -> Path:
    return Path(os.environ.get("VPNLAB_SWARM_DIR") or STATE_ROOT) / "cluster.json"


def log_path() -> Path:
    """The second dockerd's log: in the checkout, where its user looks."""
    return REPO_ROOT / ".cache" / "swarm" / f"{WORKER}-dockerd.log"


def read_record() -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(record_path().read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise LabError(f"{record_path()} is not JSON ({exc}): remove it by hand") from None
    return data


def _write(record: dict[str, Any]) -> None:
    path = record_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".tmp").write_text(json.dumps(record, indent=1) + "\n")
    path.with_suffix(".tmp").replace(path)


def _run(*argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        said = (done.stderr or done.stdout).strip()
        raise LabError(f"`{' '.join(argv)}` failed (exit {done.returncode}): {said}")
    return done


def _docker(socket: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run("docker", "-H", socket, *args, check=check, timeout=120)


def swarm_state(socket: str) -> str:
    """The engine's swarm state (inactive, active, pending…) or "" when it does not answer."""
    done = _docker(socket, "info", "--format", "{{.Swarm.LocalNodeState}}", check=False)
    return done.stdout.strip() if done.returncode == 0 else ""


def engines() -> dict[str, str] | None:
    """name → engine URL of the cluster `up()` made (None when there is none)."""
    record = read_record()
    if not record or not record.get("ready"):
        return None
    return dict(record["engines"])


def up(progress: Progress = print) -> dict[str, str]:
    """Bring the two-engine swarm up (again, if a record says an earlier one broke); its engines."""
    record = read_record()
    if (
        record
        and record.get("ready")
        and all(swarm_state(url) == "active" for url in record["engines"].values())
    ):
        progress(f"swarm: already up ({', '.join(record['engines'])})")
        return dict(record["engines"])
    if record:
        progress("swarm: a previous cluster is incomplete; removing it first")
        down(progress)
    state = swarm_state(LOCAL_ENGINE)
    if state == "":
        raise LabError("the host's Docker engine does not answer: start it (`make deps`)")
    if state != "inactive":
        raise LabError(
            f"the host's engine is already in a swarm ({state}) not made by `make swarm-up`: "
            "use it as it is (VPNLAB_SWARM_ENGINES=NAME=URL,…) or `docker swarm leave --force`"
        )
    socket = f"unix://{EXEC_ROOT}/docker.sock"
    record = {
        "netns": NETNS, "veth": HOST_VETH, "data_root": str(DATA_ROOT),
        "exec_root": str(EXEC_ROOT), "socket": socket, "pid": None, "started": None,
        "manager_joined": False, "ready": False,
        "engines": {MANAGER: LOCAL_ENGINE, WORKER: socket},
    }  # fmt: skip
    _write(record)  # before anything exists: down() finds whatever follows
    progress(f"swarm: namespace {NETNS}, veth {HOST_VETH} {HOST_ADDRESS}/{PREFIX}")
    _run("ip", "netns", "add", NETNS)
    _run("ip", "link", "add", HOST_VETH, "type", "veth", "peer", "name", WORKER_VETH)
    _run("ip", "link", "set", WORKER_VETH, "netns", NETNS)
    _run("ip", "addr", "add", f"{HOST_ADDRESS}/{PREFIX}", "dev", HOST_VETH)
    _run("ip", "link", "set", HOST_VETH, "up")
    # VXLAN replies must leave from the manager's advertise address, or they are dropped.
    _run("ip", "route", "replace", f"{WORKER_ADDRESS}/32", "dev", HOST_VETH, "src", HOST_ADDRESS)
    ns = ["ip", "-n", NETNS]
    _run(*ns, "addr", "add", f"{WORKER_ADDRESS}/{PREFIX}", "dev", WORKER_VETH)
    _run(*ns, "link", "set", "lo", "up")
    _run(*ns, "link", "set", WORKER_VETH, "up")
    _run(*ns, "route", "add", "default", "via", HOST_ADDRESS)
    record["pid"], record["started"] = _start_dockerd(socket, progress)
    _write(record)
    progress(f"swarm: docker swarm init --advertise-addr {HOST_ADDRESS} on the host's engine")
    record["manager_joined"] = True
    _write(record)
    _docker(LOCAL_ENGINE, "swarm", "init", "--advertise-addr", HOST_ADDRESS,
            "--listen-addr", f"{HOST_ADDRESS}:2377")  # fmt: skip
    token = _docker(LOCAL_ENGINE, "swarm", "join-token", "-q", "worker").stdout.strip()
    progress(f"swarm: {WORKER} joins as a worker from {WORKER_ADDRESS}")
    _docker(socket, "swarm", "join", "--token", token, "--advertise-addr", WORKER_ADDRESS,
            "--listen-addr", f"{WORKER_ADDRESS}:2377", f"{HOST_ADDRESS}:2377")  # fmt: skip
    record["ready"] = True
    _write(record)
    progress(f"swarm: up — engines {MANAGER} (host) and {WORKER} ({socket})")
    return dict(record["engines"])


def _start_dockerd(socket: str, progress: Progress) -> tuple[int, int | None]:
    for directory in (DATA_ROOT, EXEC_ROOT):
        directory.mkdir(parents=True, exist_ok=True)
    config = EXEC_ROOT / "empty.json"
    config.write_text("{}\n")
    driver = _docker(LOCAL_ENGINE, "info", "--format", "{{.Driver}}").stdout.strip()
    log = log_path()
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        "nsenter", f"--net=/var/run/netns/{NETNS}", "dockerd", "--config-file", str(config),
        "--data-root", str(DATA_ROOT), "--exec-root", str(EXEC_ROOT),
        "--pidfile", str(EXEC_ROOT / "dockerd.pid"), "-H", socket, "--storage-driver", driver,
    ]  # fmt: skip
    progress(f"swarm: starting engine {WORKER} (dockerd, storage {driver}; log {log})")
    with log.open("ab") as out:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
        )
    deadline = time.monotonic() + 60
    while swarm_state(socket) == "":
        if process.poll() is not None:
            raise LabError(f"dockerd of {WORKER} exited ({process.returncode}): see {log}")
        if time.monotonic() > deadline:
            raise LabError(f"dockerd of {WORKER} does not answer on {socket} after 60 s: see {log}")
        time.sleep(0.5)
    return process.pid, start_time(process.pid)


def down(progress: Progress = print) -> None:
    """Remove what the record names, whatever state it is in; no record: nothing to do."""
    record = read_record()
    if record is None:
        return
    problems: list[str] = []
    socket = record["socket"]

    def attempt(what: str, action: Callable[[], object]) -> None:
        try:
            action()
        except (LabError, OSError, subprocess.SubprocessError) as exc:
            problems.append(f"{what}: {exc}")

    if swarm_state(socket):
        progress(f"swarm: {WORKER} removes its lab containers and leaves the swarm")
        attempt("worker containers", lambda: _remove_lab_containers(socket))
        _docker(socket, "swarm", "leave", "--force", check=False)
    if record.get("manager_joined") and swarm_state(LOCAL_ENGINE) not in ("", "inactive"):
        progress("swarm: the host's engine removes its swarm labs and leaves the swarm")
        attempt("manager containers", lambda: _remove_lab_containers(LOCAL_ENGINE))
        # Best effort: a dead worker's attachments can hold a network; leaving the swarm
        # discards every overlay anyway.
        with contextlib.suppress(LabError):
            _remove_lab_networks(LOCAL_ENGINE)
        attempt("swarm leave", lambda: _docker(LOCAL_ENGINE, "swarm", "leave", "--force"))
        # docker_gwbridge is made by swarm init; it goes unless something else uses it.
        _docker(LOCAL_ENGINE, "network", "rm", "docker_gwbridge", check=False)
    if record.get("pid"):
        attempt("dockerd", lambda: _stop(int(record["pid"]), record.get("started")))
    for root in (record["exec_root"], record["data_root"]):
        attempt(f"processes under {root}", functools.partial(_stop_leftovers, root))
        attempt(f"mounts under {root}", functools.partial(_unmount_under, root))
        attempt(f"remove {root}", functools.partial(_run, "rm", "-rf", "--one-file-system", root))
        with contextlib.suppress(OSError):
            Path(root).parent.rmdir()  # /run/vpnlab-swarm, when no other engine is left there
    if Path("/sys/class/net", record["veth"]).exists():
        attempt("veth", lambda: _run("ip", "link", "del", record["veth"]))
    if Path("/var/run/netns", record["netns"]).exists():
        attempt("netns", lambda: _run("ip", "netns", "del", record["netns"]))
    if problems:
        raise LabError("swarm down left something behind: " + "; ".join(problems))
    record_path().unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        record_path().parent.rmdir()  # /var/lib/vpnlab-swarm, once its engine's data is gone
    progress("swarm: down — nothing of it is left")


def _remove_lab_containers(socket: str) -> None:
    """Containers of swarm labs (label vpnlab.swarm) on that engine."""
    ids = _docker(socket, "ps", "-aq", "--filter", "label=vpnlab.swarm").stdout.split()
    if ids:
        _docker(socket, "rm", "-f", "-v", *ids)


def _remove_lab_networks(socket: str) -> None:
    ids = _docker(socket, "network", "ls", "-q", "--filter", "label=vpnlab.swarm").stdout.split()
    if ids:
        _docker(socket, "network", "rm", *ids)


def _stop(pid: int, started: int | None) -> None:
    """SIGTERM the dockerd we started (only if that pid is still it), wait, then SIGKILL."""
    if start_time(pid) is None or (started is not None and start_time(pid) != started):
        return  # gone, or the pid now names another process
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while start_time(pid) is not None and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.2)
    if start_time(pid) is not None:
        os.kill(pid, signal.SIGKILL)


def _stop_leftovers(root: str) -> None:
    """containerd and its shims that the dockerd under root started, if they outlived it: the
    only processes whose command line names that root."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if any(root.encode() in word for word in argv):
                os.kill(int(entry.name), signal.SIGKILL)


def _unmount_under(root: str) -> None:
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for point in sorted((m for m in mounts if m == root or m.startswith(root + "/")), reverse=True):
        _run("umount", "-l", point, check=False)
