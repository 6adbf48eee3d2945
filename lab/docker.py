"""Docker backend: the lab as compose services, one container per node.

Compose creates and removes the lab from the same files the namespace backend reads (so the
topology has one source), through its command line: `docker compose` (v2) where it exists,
`docker-compose` (1.29) otherwise. Everything else goes through the Docker SDK, plus `ip`,
`iptables` and `tcpdump` on the host for what only the host can do: pull a node's cable, let
routed traffic cross a lab network, watch a bridge.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal as signals
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import docker
import docker.errors
from docker.utils.socket import STDERR, frames_iter

from lab.backend import Backend, Capture, LabError, Process
from lab.capture import tcpdump
from lab.model import Topology
from lab.procfs import start_time

if TYPE_CHECKING:
    import testinfra.host
    from docker.models.containers import Container
    from docker.models.networks import Network as DockerNetwork

DEFAULT_IMAGE = "vpnlab/node:latest"
PROJECT_PREFIX = "vpnlab-"
LAB_DIR = PurePosixPath("/lab")  # where every node sees the run's work directory

_PROJECT = "com.docker.compose.project"
_SERVICE = "com.docker.compose.service"
_NETWORK = "com.docker.compose.network"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")

# Runs on the node (python3 is in the image) around a spawned program: records its pid,
# sends its output to the log and writes its exit status when it ends (-N: killed by signal
# N, as subprocess reports it on the host), all under /lab, which the host reads directly.
_SPAWN = """\
import os, subprocess, sys
name, argv = sys.argv[1], sys.argv[2:]
def put(suffix, text):
    path = f"/lab/run/{name}.{suffix}"
    with open(path + ".tmp", "w") as f:
        f.write(text + "\\n")
    os.replace(path + ".tmp", path)
with open(f"/lab/logs/{name}.log", "ab", buffering=0) as log:
    try:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                             cwd="/lab", start_new_session=True)
    except OSError as e:
        log.write(f"cannot start {argv[0]!r}: {e}\\n".encode())
        put("status", "127")
        sys.exit(0)
put("pid", str(p.pid))
put("status", str(p.wait()))
"""


class ExecTimeout(LabError, subprocess.TimeoutExpired):
    """A command on a node outlived its timeout (it was stopped).

    Both a LabError and a subprocess.TimeoutExpired, so callers may catch either.
    """

    def __init__(self, node: str, argv: Sequence[str], timeout: float, output: str, stderr: str):
        subprocess.TimeoutExpired.__init__(self, list(argv), timeout, output, stderr)
        self.node = node

    def __str__(self) -> str:
        return (
            f"{self.node}: `{shlex.join(self.cmd)}` did not finish within {self.timeout:g} s "
            "and was stopped; give it a larger timeout or check why it hangs"
        )


def project_name(run_id: str) -> str:
    """The compose project of a run: `vpnlab-<run_id>` (names of containers and networks)."""
    name = f"{PROJECT_PREFIX}{run_id}"
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name):
        raise LabError(
            f"run id {run_id!r} cannot name a compose project: use lower-case letters, digits, "
            "'-' and '_'"
        )
    return name


def engine() -> docker.DockerClient:
    """A client of the Docker engine, or a LabError that says how to get one."""
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except docker.errors.DockerException as exc:
        raise LabError(
            f"docker info failed: is the Docker daemon running? ({exc}); start it "
            "(`make deps` installs and starts one) or use the namespace backend "
            "(BACKEND=netns)"
        ) from None
    return client


def compose_command() -> list[str]:
    """`docker compose` (v2) if the plugin is there, else `docker-compose` (1.29)."""
    for argv in (["docker", "compose"], ["docker-compose"]):
        try:
            done = subprocess.run([*argv, "version"], capture_output=True, timeout=60)
        except (FileNotFoundError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return argv
    raise LabError(
        "neither `docker compose` (v2) nor `docker-compose` (1.29) works: install one "
        "(`make deps` installs Debian's docker-compose)"
    )


def lab_runs(client: docker.DockerClient | None = None) -> list[str]:
    """Run ids of every lab with a container or network on this engine (to clean after a crash)."""
    client = client or engine()
    projects: set[str] = set()
    for container in client.containers.list(all=True, filters={"label": _PROJECT}):
        projects.add(container.labels.get(_PROJECT, ""))
    for network in client.networks.list(filters={"label": _PROJECT}):
        projects.add((network.attrs.get("Labels") or {}).get(_PROJECT, ""))
    return sorted(p.removeprefix(PROJECT_PREFIX) for p in projects if p.startswith(PROJECT_PREFIX))


class DockerBackend(Backend):
    """Nodes are containers of the compose project `vpnlab-<run_id>`; workdir is /lab in each."""

    name = "docker"

    def __init__(
        self,
        topology: Topology,
        run_id: str,
        workdir: Path,
        *,
        health_timeout: float = 60.0,
        wait_for_other: float = 900.0,
    ) -> None:
        """health_timeout: how long up() waits for the nodes; wait_for_other: how long it waits
        for another process's lab on the same subnets to go (one lab fits on an engine)."""
        super().__init__(topology, run_id, workdir)
        self.project = project_name(run_id)
        self.health_timeout = health_timeout
        self.wait_for_other = wait_for_other
        self._client: docker.DockerClient | None = None
        self._compose: list[str] | None = None
        self._containers: dict[str, Container] = {}
        self._interfaces: dict[tuple[str, str], str] = {}

    # -- lifecycle ---------------------------------------------------------------------------
    def up(self) -> None:
        client = self.engine()
        image = os.environ.get("VPNLAB_IMAGE", DEFAULT_IMAGE)
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            raise LabError(
                f"image {image} is missing: run `make images` (it builds the node image "
                "without a registry)"
            ) from None
        for sub in ("run", "logs", "captures"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.wait_for_other
        while True:
            self._wait_for_other_labs(client, deadline)
            self._check_subnets(client)
            done = self._run_compose("up", "-d", "--no-build", "--remove-orphans", timeout=300)
            if done.returncode == 0:
                break
            output = (done.stderr + done.stdout).strip()
            if "overlaps" in output and time.monotonic() < deadline:
                # Another run created its networks between our check and ours: wait for it.
                self._run_compose("down", "-v", "--remove-orphans", "-t", "1", timeout=120)
                continue
            raise LabError(
                f"`compose up` for {self.project} failed (exit {done.returncode}):\n{_tail(output)}"
            )
        self._accept_within_bridges()
        self._wait_healthy()

    def down(self) -> None:
        try:
            client = self.engine()
        except LabError:
            return  # no engine answers: it runs nothing of ours either
        self._containers.clear()
        self._interfaces.clear()
        problems = []
        try:
            self._remove_accept_rules()
        except LabError as exc:
            problems.append(str(exc))
        if self.topology.files:
            try:
                done = self._run_compose("down", "-v", "--remove-orphans", "-t", "1", timeout=120)
                if done.returncode != 0:
                    problems.append(_tail(done.stderr + done.stdout))
            except (LabError, subprocess.TimeoutExpired) as exc:
                problems.append(str(exc))
        # Whatever compose left (or could not see: other files, a crash): remove by label.
        for container in client.containers.list(
            all=True, filters={"label": f"{_PROJECT}={self.project}"}
        ):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True, v=True)
        for network in self._project_networks(client):
            try:
                network.remove()
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                problems.append(f"network {network.name}: {exc}")
        if self._project_networks(client) or client.containers.list(
            all=True, filters={"label": f"{_PROJECT}={self.project}"}
        ):
            detail = "; ".join(problems) or "containers or networks remain"
            raise LabError(f"could not remove lab {self.project}: {detail}")

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
        container = self.container(node)
        api = self.engine().api
        # `timeout` on the node stops the command there; the Docker API cannot kill an exec.
        wrapped = ["timeout", "-k", "2", f"{timeout:.3f}", *argv]
        exec_id = api.exec_create(container.id, wrapped, stdin=input is not None)["Id"]
        result: dict[str, Any] = {}

        def run() -> None:
            try:
                if input is None:
                    result["out"] = api.exec_start(exec_id, demux=True)
                else:
                    sock = api.exec_start(exec_id, socket=True)
                    raw = getattr(sock, "_sock", sock)
                    raw.sendall(input)
                    raw.shutdown(socket.SHUT_WR)
                    chunks: tuple[list[bytes], list[bytes]] = ([], [])
                    for stream, data in frames_iter(sock, tty=False):
                        chunks[stream == STDERR].append(data)
                    result["out"] = (b"".join(chunks[0]), b"".join(chunks[1]))
                    sock.close()
            except Exception as exc:  # re-raised in the caller's thread
                result["error"] = exc

        started = time.monotonic()
        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        worker.join(timeout + 30)
        elapsed = time.monotonic() - started
        if worker.is_alive():
            raise ExecTimeout(node, argv, timeout, "", "")
        if "error" in result:
            raise LabError(f"{node}: exec of `{shlex.join(argv)}` failed: {result['error']}")
        out, err = result["out"] or (None, None)
        stdout = (out or b"").decode(errors="replace")
        stderr = (err or b"").decode(errors="replace")
        code = self._exit_code(exec_id)
        if code in (124, 137) and elapsed >= timeout - 0.05:
            raise ExecTimeout(node, argv, timeout, stdout, stderr)
        done = subprocess.CompletedProcess(list(argv), code, stdout, stderr)
        if check and code != 0:
            raise LabError(
                f"{node}: `{shlex.join(argv)}` exited {code}: {_tail(stderr or stdout) or '-'}"
            )
        return done

    def spawn(self, node: str, argv: Sequence[str], *, name: str) -> Process:
        if not _NAME.fullmatch(name):
            raise LabError(f"process name {name!r}: use letters, digits, '.', '-' and '_'")
        container = self.container(node)
        for sub in ("run", "logs"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        process = Process(node=node, name=name, log_path=self.workdir / "logs" / f"{name}.log")
        pid_file, status_file = self._run_files(process)
        if pid_file.exists() and not status_file.exists():
            pid = pid_file.read_text().strip()
            if self.exec(node, ["kill", "-0", pid], timeout=10).returncode == 0:
                raise LabError(
                    f"a process named {name!r} is still running on {node} (pid {pid}); stop it "
                    "or pick another name"
                )
        for path in (pid_file, status_file, process.log_path):
            path.unlink(missing_ok=True)
        container.exec_run(["python3", "-c", _SPAWN, name, *argv], detach=True)
        deadline = time.monotonic() + 15
        while not (pid_file.exists() or status_file.exists()):
            if time.monotonic() > deadline:
                raise LabError(
                    f"{node}: `{shlex.join(argv)}` did not start within 15 s "
                    f"(no {pid_file}); is /lab mounted and python3 in the image?"
                )
            time.sleep(0.02)
        return process

    def signal(self, process: Process, sig: int = signals.SIGTERM) -> None:
        pid_file, status_file = self._run_files(process)
        if status_file.exists():
            return
        try:
            pid = int(pid_file.read_text())
        except (FileNotFoundError, ValueError):
            raise LabError(
                f"no pid recorded for {process.name!r} ({pid_file}): was it started with "
                "spawn() in this work directory?"
            ) from None
        self.exec(process.node, ["kill", f"-{int(sig)}", str(pid)], timeout=10)

    def wait(self, process: Process, timeout: float) -> int | None:
        _, status_file = self._run_files(process)
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(FileNotFoundError, ValueError):
                return int(status_file.read_text())
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    # -- network -----------------------------------------------------------------------------
    def interface(self, node: str, network: str) -> str:
        key = (node, network)
        if key not in self._interfaces:
            address = str(self.topology.node(node).address(network))
            links = json.loads(self.ensure(node, ["ip", "-j", "-4", "addr", "show"]))
            for link in links:
                if any(a.get("local") == address for a in link.get("addr_info", ())):
                    self._interfaces[key] = link["ifname"]
                    break
            else:
                raise LabError(
                    f"{node} has no interface with address {address} (network {network}); "
                    "was the container started from compose/*.yml?"
                )
        return self._interfaces[key]

    def _write_sysctl(self, node: str, key: str, value: str) -> None:
        box = self.container(node)
        box.reload()
        pid = box.attrs["State"]["Pid"]
        argv = ["nsenter", f"--net=/proc/{pid}/ns/net", "sysctl", "-qw", f"{key}={value}"]
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            raise LabError(f"{node}: `{shlex.join(argv)}` failed: {done.stderr.strip()}")

    def link_down(self, node: str, network: str) -> None:
        self._set_link(node, network, "down")

    def link_up(self, node: str, network: str) -> None:
        self._set_link(node, network, "up")

    @contextlib.contextmanager
    def capture(self, network: str, name: str, bpf: str = "") -> Iterator[Capture]:
        if not _NAME.fullmatch(name):
            raise LabError(f"capture name {name!r}: use letters, digits, '.', '-' and '_'")
        path = self.workdir / "captures" / f"{name}.pcap"
        with tcpdump(self.bridge(network), path, bpf):
            yield Capture(network=network, path=path)

    def bridge(self, network: str) -> str:
        """The host bridge of a lab network (where capture listens)."""
        net = self._network(network)
        options = net.attrs.get("Options") or {}
        return options.get("com.docker.network.bridge.name") or f"br-{net.id[:12]}"

    # -- files and programs ------------------------------------------------------------------
    def node_path(self, host_path: Path) -> str:
        path = Path(host_path)
        if not path.is_absolute():
            path = self.workdir / path
        try:
            relative = path.resolve().relative_to(self.workdir.resolve())
        except ValueError:
            raise LabError(
                f"{host_path} is outside the run's work directory {self.workdir}: nodes see only "
                f"that directory (at {LAB_DIR}); put the file there"
            ) from None
        return str(LAB_DIR / relative)

    def vpn_argv(self) -> list[str]:
        return ["vpn"]

    # -- inspection --------------------------------------------------------------------------
    def host(self, node: str) -> testinfra.host.Host:
        import testinfra

        return testinfra.get_host(f"docker://{self.container(node).name}")

    def container(self, node: str) -> Container:
        """The SDK object of node's container (for inspection beyond the Backend verbs)."""
        self.topology.node(node)  # a KeyError that lists the nodes, for a typo
        if node not in self._containers:
            found = self.engine().containers.list(
                all=True, filters={"label": [f"{_PROJECT}={self.project}", f"{_SERVICE}={node}"]}
            )
            if not found:
                raise LabError(
                    f"node {node} has no container in lab {self.project}: is the lab up? "
                    "(`make up`)"
                )
            self._containers[node] = found[0]
        return self._containers[node]

    def engine(self) -> docker.DockerClient:
        if self._client is None:
            self._client = engine()
        return self._client

    # -- internals ---------------------------------------------------------------------------
    def _run_compose(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        if not self.topology.files:
            raise LabError("the topology names no compose file: load it with lab.topology.load")
        if self._compose is None:
            self._compose = compose_command()
        argv = [*self._compose, "-p", self.project]
        for file in self.topology.files:
            argv += ["-f", str(Path(file).resolve())]
        env = {
            **os.environ,
            "VPNLAB_WORKDIR": str(self.workdir.resolve()),
            "VPNLAB_OWNER": _owner(os.getpid()) or "",
        }
        return subprocess.run(
            [*argv, *args], env=env, capture_output=True, text=True, timeout=timeout
        )

    def _wait_for_other_labs(self, client: docker.DockerClient, deadline: float) -> None:
        """While a live process elsewhere runs a lab on our subnets, wait (until deadline).

        A lab whose owner is gone (crashed, or left up by `make up`) is not waited for:
        _check_subnets then says to run `make down`.
        """
        told = False
        while time.monotonic() < deadline:
            busy = sorted(
                {
                    f"{labels.get(_PROJECT)} (pid {owner.split('/')[1]})"
                    for net in self._overlapping(client)
                    for labels in [net.attrs.get("Labels") or {}]
                    for owner in [labels.get("vpnlab.owner", "")]
                    if owner and owner != _owner(os.getpid()) and _owner_alive(owner)
                }
            )
            if not busy:
                return
            if not told:
                print(
                    f"vpnlab: {', '.join(busy)} uses the lab's subnets on this Docker engine; "
                    f"waiting up to {deadline - time.monotonic():.0f} s for it to finish",
                    file=sys.stderr,
                    flush=True,
                )
                told = True
            time.sleep(1)

    def _overlapping(self, client: docker.DockerClient) -> list[DockerNetwork]:
        """Docker networks of other projects whose subnets overlap the lab's."""
        ours = [n.subnet for n in self.topology.networks.values()]
        found = []
        for net in client.networks.list():
            if (net.attrs.get("Labels") or {}).get(_PROJECT) == self.project:
                continue
            for config in (net.attrs.get("IPAM") or {}).get("Config") or ():
                with contextlib.suppress(ValueError):
                    subnet = ipaddress.ip_network(config.get("Subnet", ""), strict=False)
                    if subnet.version == 4 and any(subnet.overlaps(o) for o in ours):
                        found.append(net)
                        break
        return found

    def _check_subnets(self, client: docker.DockerClient) -> None:
        """Refuse to start over another network on the lab's subnets, saying whose it is."""
        clashes = []
        for net in self._overlapping(client):
            project = (net.attrs.get("Labels") or {}).get(_PROJECT, "")
            if project.startswith(PROJECT_PREFIX):
                hint = (
                    f"another lab is up (run {project.removeprefix(PROJECT_PREFIX)}): "
                    "`make down` removes it"
                )
            else:
                hint = f"remove it (`docker network rm {net.name}`) if unused"
            subnets = ", ".join(
                c.get("Subnet", "?") for c in (net.attrs.get("IPAM") or {}).get("Config") or ()
            )
            clashes.append(f"Docker network {net.name} ({subnets}): {hint}")
        if clashes:
            ours = ", ".join(f"{n.name} {n.subnet}" for n in self.topology.networks.values())
            raise LabError(
                f"cannot create the lab's networks ({ours}); they overlap " + "; ".join(clashes)
            )

    def _accept_within_bridges(self) -> None:
        """Let routed traffic cross each lab network, as it would cross a switch.

        With br_netfilter the host's FORWARD chain also sees bridged frames, and Docker drops
        those of an internal network whose source or destination is outside its subnet: exactly
        the VPN pool's packets between gateway and LAN hosts. A rule in DOCKER-USER (which runs
        first) accepts what enters and leaves the same lab bridge; traffic between bridges
        (client → LAN without the tunnel) stays dropped. down() removes the rules by comment.
        """
        iptables = _docker_iptables()
        if iptables is None:
            return  # Docker manages no firewall here: nothing drops the traffic
        for network in self.topology.networks:
            bridge = self.bridge(network)
            rule = ["-i", bridge, "-o", bridge, "-m", "comment", "--comment", self.project]
            done = subprocess.run(
                [iptables, "-I", "DOCKER-USER", *rule, "-j", "ACCEPT"],
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                raise LabError(
                    f"`{iptables} -I DOCKER-USER {shlex.join(rule)} -j ACCEPT` failed: "
                    f"{done.stderr.strip()}; without it Docker drops the VPN's routed packets "
                    "on the LAN (run as root)"
                )

    def _remove_accept_rules(self) -> None:
        iptables = _docker_iptables()
        if iptables is None:
            return
        listing = subprocess.run([iptables, "-S", "DOCKER-USER"], capture_output=True, text=True)
        for line in listing.stdout.splitlines():
            words = shlex.split(line)
            if words[:2] != ["-A", "DOCKER-USER"] or f"--comment {self.project} " not in line + " ":
                continue
            done = subprocess.run([iptables, "-D", *words[1:]], capture_output=True, text=True)
            if done.returncode != 0:
                raise LabError(f"could not remove the rule `{line}`: {done.stderr.strip()}")

    def _wait_healthy(self) -> None:
        """Wait until every node runs and passes its compose healthcheck test.

        The test is run here, at once and in parallel: Docker's own first check comes only one
        interval after start (and `up --wait` is v2-only). Docker's verdict counts too.
        """
        deadline = time.monotonic() + self.health_timeout
        pending = dict.fromkeys(self.topology.nodes, "no container yet")
        with ThreadPoolExecutor(max_workers=4) as pool:
            while True:
                running = []
                for node in list(pending):
                    try:
                        container = self.container(node)
                        container.reload()
                    except (LabError, docker.errors.NotFound):
                        self._containers.pop(node, None)
                        continue
                    state = container.attrs["State"]
                    if state.get("Status") != "running":
                        logs = container.logs(tail=20).decode(errors="replace")
                        raise LabError(
                            f"node {node} stopped while the lab came up (exit "
                            f"{state.get('ExitCode')}): {_tail(logs) or 'no output'}"
                        )
                    health = state.get("Health") or {}
                    if health.get("Status") == "healthy":
                        del pending[node]
                    else:
                        running.append(node)
                        docker_log = (health.get("Log") or [{}])[-1].get("Output", "")
                        pending[node] = f"Docker says {health.get('Status')}: {_tail(docker_log)}"
                for node, (ok, output) in zip(running, pool.map(self._probe, running), strict=True):
                    if ok:
                        del pending[node]
                    else:
                        pending[node] = f"healthcheck failed: {output}; " + pending[node]
                if not pending:
                    return
                if time.monotonic() >= deadline:
                    detail = "; ".join(f"{node}: {why}" for node, why in pending.items())
                    raise LabError(
                        f"lab {self.project} not healthy after {self.health_timeout:g} s: {detail}"
                    )
                time.sleep(0.2)

    def _probe(self, node: str) -> tuple[bool, str]:
        """Run node's healthcheck test once: (passed, what it printed)."""
        argv = self.topology.node(node).healthcheck
        if not argv:
            return True, ""
        try:
            done = self.exec(node, argv, timeout=10)
        except LabError as exc:
            return False, str(exc)
        return done.returncode == 0, _tail(done.stderr + done.stdout) or f"exit {done.returncode}"

    def _exit_code(self, exec_id: str) -> int:
        api = self.engine().api
        for _ in range(100):
            info = api.exec_inspect(exec_id)
            if not info.get("Running") and info.get("ExitCode") is not None:
                return int(info["ExitCode"])
            time.sleep(0.02)
        raise LabError(f"exec {exec_id[:12]} reports no exit code")

    def _run_files(self, process: Process) -> tuple[Path, Path]:
        run = self.workdir / "run"
        return run / f"{process.name}.pid", run / f"{process.name}.status"

    def _network(self, network: str) -> DockerNetwork:
        self.topology.network(network)  # a KeyError that lists the networks
        for net in self._project_networks(self.engine()):
            labels = net.attrs.get("Labels") or {}
            if labels.get(_NETWORK) == network or net.name == f"{self.project}_{network}":
                return net
        raise LabError(f"network {network} of lab {self.project} does not exist: is the lab up?")

    def _project_networks(self, client: docker.DockerClient) -> list[DockerNetwork]:
        found = {
            n.id: n for n in client.networks.list(filters={"label": f"{_PROJECT}={self.project}"})
        }
        for net in client.networks.list(names=[f"{self.project}_"]):
            if net.name.startswith(f"{self.project}_"):
                found.setdefault(net.id, net)
        return list(found.values())

    def _set_link(self, node: str, network: str, state: str) -> None:
        """Set the host end of node's veth on network down/up: addresses and routes on the
        node stay as they are, as when a cable is pulled."""
        ifname = self.interface(node, network)
        iflink = int(self.ensure(node, ["cat", f"/sys/class/net/{ifname}/iflink"]).strip())
        bridge = self.bridge(network)
        peer = None
        for dev in Path("/sys/class/net").iterdir():
            with contextlib.suppress(OSError, ValueError):
                if int((dev / "ifindex").read_text()) == iflink:
                    peer = dev.name
                    break
        master = Path("/sys/class/net", peer or "-", "master")
        if peer is None or not master.exists() or master.resolve().name != bridge:
            raise LabError(
                f"the host end of {node}'s {ifname} (ifindex {iflink}) is not a port of bridge "
                f"{bridge} in this network namespace; is the Docker engine on this host?"
            )
        done = subprocess.run(
            ["ip", "link", "set", "dev", peer, state], capture_output=True, text=True
        )
        if done.returncode != 0:
            raise LabError(
                f"`ip link set dev {peer} {state}` failed: {done.stderr.strip()} "
                "(link_down/link_up need root on the host)"
            )


def _docker_iptables() -> str | None:
    """The iptables (nft or legacy) that holds Docker's DOCKER-USER chain, if any."""
    for name in ("iptables", "iptables-legacy"):
        path = shutil.which(name)
        if path is None:
            continue
        listing = subprocess.run([path, "-S", "DOCKER-USER"], capture_output=True, text=True)
        if listing.returncode == 0:
            return path
        if "Permission denied" in listing.stderr or "you must be root" in listing.stderr:
            raise LabError(
                f"`{name} -S DOCKER-USER` failed: {listing.stderr.strip()}; the Docker lab "
                "needs root on the host"
            )
    return None


def _owner(pid: int) -> str | None:
    """host/pid/start-time of a live process: names a lab's owner, safe against pid reuse."""
    started = start_time(pid)
    return None if started is None else f"{socket.gethostname()}/{pid}/{started}"


def _owner_alive(owner: str) -> bool:
    host, _, rest = owner.partition("/")
    pid, _, _ = rest.partition("/")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    return _owner(int(pid)) == owner


def _tail(text: str, lines: int = 8) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
