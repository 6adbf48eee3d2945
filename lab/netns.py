"""The lab on Linux network namespaces: no Docker, the same topology, up in a fraction of a second.

Layout of a run with prefix P (`vl` + run id):
- one namespace `P-NODE` per node, interfaces eth0, eth1… in the order of its networks;
- one namespace `P-lab` holding a bridge `Pb<i>` per network and the bridge-side veth ends
  `Pn<node>e<if>`. The host's own namespace is never touched: with br_netfilter loaded, Docker's
  iptables rules there would drop bridged traffic.

Everything created is written to workdir/state.json before it exists, so `down` — from this
object or from a fresh process after a crash — removes all of it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab.backend import Backend, Capture, LabError, Process
from lab.capture import tcpdump
from lab.model import Topology
from lab.procfs import alive, start_time

if TYPE_CHECKING:
    import testinfra.host

log = logging.getLogger(__name__)

NETNS_DIR = Path("/run/netns")
ETC_NETNS_DIR = Path("/etc/netns")
REPO_ROOT = Path(__file__).resolve().parent.parent
CLONE_NEWNET = 0x40000000
MNT_DETACH = 2
IFNAMSIZ = 15

# Set in every namespace before the compose file's own sysctls. A new namespace copies IPv4
# settings from the host's (net.core.devconf_inherit_init_net=0), where Docker turned forwarding
# on: only nodes whose compose entry says so forward. No IPv6, as Docker gives containers on
# IPv4-only networks: it keeps captures quiet.
BASE_SYSCTLS = {
    "net.ipv4.ip_forward": "0",
    "net.ipv6.conf.all.disable_ipv6": "1",
    "net.ipv6.conf.default.disable_ipv6": "1",
}


def prefix_for(run_id: str) -> str:
    """`vl` + the run id when short and plain, else `vl` + 6 hex of its hash (names ≤ 15)."""
    if re.fullmatch(r"[0-9a-z]{1,6}", run_id):
        return f"vl{run_id}"
    return "vl" + hashlib.sha256(run_id.encode()).hexdigest()[:6]


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError(
            "network namespaces need root: sudo make up (or run the tests with sudo); "
            "without root use the Docker backend (--backend docker)"
        )


class NetnsBackend(Backend):
    """Realises the topology with namespaces, veth pairs and bridges."""

    name = "netns"
    health_timeout = 20.0  # seconds for every node's healthcheck to pass
    stop_timeout = 2.0  # seconds between SIGTERM and SIGKILL at down

    def __init__(self, topology: Topology, run_id: str, workdir: Path) -> None:
        super().__init__(topology, run_id, Path(workdir))
        self.prefix = prefix_for(run_id)
        self.lab_ns = f"{self.prefix}-lab"
        self._record = _Record(self.workdir / "state.json")
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    # -- names -------------------------------------------------------------------------------
    def namespace(self, node: str) -> str:
        """The namespace of node (raises LabError for a node the topology lacks)."""
        try:
            self.topology.node(node)
        except KeyError as exc:
            raise LabError(exc.args[0]) from None
        return f"{self.prefix}-{node}"

    def _bridge(self, network: str) -> str:
        try:
            index = list(self.topology.networks).index(network)
        except ValueError:
            raise LabError(
                f"no network {network!r}; networks: {', '.join(self.topology.networks)}"
            ) from None
        return f"{self.prefix}b{index}"

    def _namespaces(self) -> list[str]:
        return [self.lab_ns] + [self.namespace(n) for n in self.topology.nodes]

    # -- lifecycle ---------------------------------------------------------------------------
    def up(self) -> None:
        require_root()
        self._preflight()
        started = time.monotonic()
        try:
            self._create_namespaces()
            self._create_links()
            self._apply_node_sysctls()
            self._start_nodes()
            self._wait_healthy()
        except BaseException:
            self.down()
            raise
        log.info(
            "lab %s up: %d nodes, %d networks (%.2f s)",
            self.prefix,
            len(self.topology.nodes),
            len(self.topology.networks),
            time.monotonic() - started,
        )

    def _preflight(self) -> None:
        if self._record.exists():
            raise LabError(
                f"{self._record.path} already records a lab: take it down first "
                f"(python -m lab down, or NetnsBackend(...).down())"
            )
        if "lab" in self.topology.nodes:
            raise LabError("a node may not be named 'lab': the netns backend uses P-lab itself")
        for ns in self._namespaces():
            if (NETNS_DIR / ns).exists():
                raise LabError(
                    f"network namespace {ns} already exists: another lab runs with run id "
                    f"{self.run_id!r} (or one was left behind): take it down "
                    f"(python -m lab down --all, or ip netns del {ns}) or use another run id"
                )
        for node in self.topology.nodes.values():
            for key in node.sysctls:
                if not key.startswith("net."):
                    raise LabError(
                        f"node {node.name!r}: sysctl {key} is not per network namespace; "
                        "the netns backend applies only net.* sysctls"
                    )
        too_long = [n for n in self._link_names().values() if len(n) > IFNAMSIZ]
        if too_long:
            raise LabError(f"interface names longer than {IFNAMSIZ} characters: {too_long}")

    def _link_names(self) -> dict[tuple[str, str], str]:
        """Bridge-side veth names, keyed by (node, network)."""
        names = {}
        for ni, node in enumerate(self.topology.nodes.values()):
            for ii, attachment in enumerate(node.attachments):
                names[node.name, attachment.network] = f"{self.prefix}n{ni}e{ii}"
        return names

    def _create_namespaces(self) -> None:
        from pyroute2 import netns

        namespaces = self._namespaces()
        etc_dirs = [str(ETC_NETNS_DIR / ns) for ns in namespaces[1:]]
        self._record.begin(self.run_id, self.prefix, namespaces, etc_dirs)
        for ns in namespaces:
            try:
                netns.create(ns)
            except OSError as exc:
                raise LabError(f"cannot create network namespace {ns}: {exc}") from exc
        for ns in namespaces:
            write_sysctls(ns, BASE_SYSCTLS)
        self._write_hosts_files()
        log.info("namespaces: %s", " ".join(namespaces))

    def _write_hosts_files(self) -> None:
        """/etc/netns/NS/hosts: `ip netns exec` mounts it over /etc/hosts, so node names resolve
        as Docker's DNS resolves them (the address on a network both nodes share)."""
        for node in self.topology.nodes.values():
            lines = ["127.0.0.1\tlocalhost", f"127.0.1.1\t{node.name}"]
            for other in self.topology.nodes.values():
                if other.name == node.name:
                    continue
                shared = [a for a in other.attachments if a.network in node.networks]
                if shared:
                    lines.append(f"{shared[0].address}\t{other.name}")
            path = ETC_NETNS_DIR / self.namespace(node.name)
            path.mkdir(parents=True, exist_ok=True)
            (path / "hosts").write_text("\n".join(lines) + "\n")

    def _create_links(self) -> None:
        from pyroute2 import IPRoute

        names = self._link_names()
        with IPRoute(netns=self.lab_ns) as lab:
            lab.link("set", index=lab.link_lookup(ifname="lo")[0], state="up")
            bridges = {}
            for network in self.topology.networks:
                bridge = self._bridge(network)
                lab.link("add", ifname=bridge, kind="bridge")
                bridges[network] = lab.link_lookup(ifname=bridge)[0]
                lab.link("set", index=bridges[network], ifalias=network, state="up")
            for node in self.topology.nodes.values():
                ns = self.namespace(node.name)
                with IPRoute(netns=ns) as ipr:
                    ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
                    for i, attachment in enumerate(node.attachments):
                        outer = names[node.name, attachment.network]
                        lab.link(
                            "add",
                            ifname=outer,
                            kind="veth",
                            peer={"ifname": f"eth{i}", "net_ns_fd": ns},
                        )
                        index = lab.link_lookup(ifname=outer)[0]
                        lab.link(
                            "set",
                            index=index,
                            master=bridges[attachment.network],
                            ifalias=f"{node.name}:{attachment.network}",
                            state="up",
                        )
                        inner = ipr.link_lookup(ifname=f"eth{i}")[0]
                        prefixlen = self.topology.network(attachment.network).subnet.prefixlen
                        ipr.addr(
                            "add", index=inner, address=str(attachment.address), prefixlen=prefixlen
                        )
                        ipr.link("set", index=inner, state="up")
        log.info("links: %d bridges, %d veth pairs", len(self.topology.networks), len(names))

    def _apply_node_sysctls(self) -> None:
        for node in self.topology.nodes.values():
            if node.sysctls:
                write_sysctls(self.namespace(node.name), node.sysctls)

    def _start_nodes(self) -> None:
        for node in self.topology.nodes.values():
            argv = list(node.command) or ["sleep", "infinity"]
            self._popen(node.name, argv, name=f"node.{node.name}")
        log.info("started %d node commands", len(self.topology.nodes))

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.health_timeout
        pending = {n.name: n.healthcheck for n in self.topology.nodes.values() if n.healthcheck}
        last: dict[str, str] = {}
        while True:
            self._check_nodes_alive()
            checks = {
                node: subprocess.Popen(
                    ["ip", "netns", "exec", self.namespace(node), *argv],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                for node, argv in pending.items()
            }
            for node, check in checks.items():
                try:
                    out, _ = check.communicate(timeout=max(1.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    _killpg(check.pid, signal.SIGKILL)
                    out, _ = check.communicate()
                if check.returncode == 0:
                    del pending[node]
                else:
                    last[node] = f"exit {check.returncode}: {out.decode(errors='replace').strip()}"
            if not pending:
                break
            if time.monotonic() > deadline:
                details = "; ".join(
                    f"{n}: `{shlex.join(pending[n])}` {last.get(n, '')}" for n in pending
                )
                raise LabError(
                    f"nodes not healthy within {self.health_timeout:.0f} s — {details} "
                    f"(node logs: {self.workdir / 'logs'})"
                )
            time.sleep(0.05)
        self._check_nodes_alive()
        log.info("all nodes healthy")

    def _check_nodes_alive(self) -> None:
        for node in self.topology.nodes:
            proc = self._procs.get(f"node.{node}")
            if proc is not None and proc.poll() is not None:
                tail = _tail(self.workdir / "logs" / f"node.{node}.log")
                raise LabError(
                    f"node {node}: its command `{shlex.join(self.topology.node(node).command)}` "
                    f"exited with status {_status(proc.returncode)}: {tail or '(no output)'}"
                )

    def down(self) -> None:
        record = self._record.load()
        if record is None:
            self._reap()
            return
        require_root()
        started = time.monotonic()
        namespaces = record.get("namespaces", [])
        prefix = record.get("prefix", self.prefix)
        namespaces += [
            p.name
            for p in (NETNS_DIR.iterdir() if NETNS_DIR.is_dir() else [])
            if p.name.startswith(f"{prefix}-") and p.name not in namespaces
        ]
        inodes = {ns: _ns_id(NETNS_DIR / ns) for ns in namespaces}
        inodes = {ns: ino for ns, ino in inodes.items() if ino is not None}
        victims = [
            entry["pid"]
            for entry in record.get("pids", [])
            if inodes.get(entry["ns"]) is not None
            and _ns_id(Path(f"/proc/{entry['pid']}/ns/net")) == inodes[entry["ns"]]
            and start_time(entry["pid"]) == entry.get("start")
        ]
        victims += [pid for pid in pids_in(set(inodes.values())) if pid not in victims]
        _terminate(victims, self.stop_timeout, self._reap)
        for ns in namespaces:
            remove_netns(ns)
        for directory in record.get("etc_dirs", []):
            shutil.rmtree(directory, ignore_errors=True)
        self._record.remove()
        log.info(
            "lab %s down: %d namespaces, %d processes (%.2f s)",
            prefix,
            len(namespaces),
            len(victims),
            time.monotonic() - started,
        )

    def _reap(self) -> None:
        for proc in self._procs.values():
            proc.poll()

    # -- commands ----------------------------------------------------------------------------
    def _argv(self, node: str, argv: Sequence[str]) -> list[str]:
        ns = self.namespace(node)
        if not (NETNS_DIR / ns).exists():
            raise LabError(f"node {node} is not up (no namespace {ns}): bring the lab up first")
        if not argv:
            raise LabError(f"no command given to run on {node}")
        return ["ip", "netns", "exec", ns, *argv]

    def exec(
        self,
        node: str,
        argv: Sequence[str],
        *,
        timeout: float = 60.0,
        check: bool = False,
        input: bytes | None = None,
    ) -> subprocess.CompletedProcess[str]:
        cmd = self._argv(node, argv)
        with subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL if input is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env=_child_env(),
        ) as proc:
            try:
                out, err = proc.communicate(input, timeout=timeout)
            except subprocess.TimeoutExpired:
                _killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
                raise LabError(
                    f"{node}: `{shlex.join(argv)}` did not finish within {timeout:g} s (killed)"
                ) from None
        result = subprocess.CompletedProcess(
            list(argv),
            _status(proc.returncode),
            out.decode(errors="replace"),
            err.decode(errors="replace"),
        )
        if check and result.returncode != 0:
            raise LabError(
                f"{node}: `{shlex.join(argv)}` exited with status {result.returncode}: "
                f"{(result.stderr or result.stdout).strip() or '(no output)'}"
            )
        return result

    def spawn(self, node: str, argv: Sequence[str], *, name: str) -> Process:
        if not re.fullmatch(r"[\w.-]+", name):
            raise LabError(f"process name {name!r}: use letters, digits, '.', '-' or '_'")
        running = self._procs.get(name)
        if running is not None and running.poll() is None:
            raise LabError(f"a process named {name!r} is still running: stop it or pick a name")
        log_path = self._popen(node, list(argv), name=name)
        return Process(node=node, name=name, log_path=log_path)

    def _popen(self, node: str, argv: list[str], *, name: str) -> Path:
        cmd = self._argv(node, argv)
        log_path = self.workdir / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=_child_env(),
            )
        self._procs[name] = proc
        self._record.add_pid(proc.pid, self.namespace(node), name)
        return log_path

    def _proc(self, process: Process) -> subprocess.Popen[bytes]:
        try:
            return self._procs[process.name]
        except KeyError:
            raise LabError(
                f"process {process.name!r} was not spawned by this backend object "
                f"(run {self.run_id})"
            ) from None

    def signal(self, process: Process, sig: int = signal.SIGTERM) -> None:
        proc = self._proc(process)
        if proc.poll() is None:
            _killpg(proc.pid, sig)

    def wait(self, process: Process, timeout: float) -> int | None:
        try:
            return self._proc(process).wait(timeout)  # -N for signal N, as Backend.wait says
        except subprocess.TimeoutExpired:
            return None

    # -- network -----------------------------------------------------------------------------
    def _node_link(self, node: str, network: str) -> dict[str, Any]:
        """The kernel's record of the link carrying node's address on network."""
        from pyroute2 import IPRoute

        try:
            address = str(self.topology.node(node).address(network))
        except KeyError as exc:
            raise LabError(exc.args[0]) from None
        self._argv(node, ["true"])  # the namespace exists
        with IPRoute(netns=self.namespace(node)) as ipr:
            found = ipr.get_addr(family=socket.AF_INET, address=address)
            if not found:
                raise LabError(
                    f"node {node} has no interface with its {network} address {address} "
                    f"(did something remove it?)"
                )
            link = ipr.get_links(found[0]["index"])[0]
            return {"ifname": link.get("ifname"), "peer": link.get("link")}

    def interface(self, node: str, network: str) -> str:
        return str(self._node_link(node, network)["ifname"])

    def _set_cable(self, node: str, network: str, state: str) -> None:
        from pyroute2 import IPRoute

        peer = self._node_link(node, network)["peer"]
        bridge = self._bridge(network)
        with IPRoute(netns=self.lab_ns) as lab:
            links = lab.get_links(peer) if peer else []
            bridge_index = lab.link_lookup(ifname=bridge)
            if not links or not bridge_index or links[0].get("master") != bridge_index[0]:
                raise LabError(
                    f"cannot find the bridge side of {node}'s {network} link in {self.lab_ns}"
                )
            lab.link("set", index=peer, state=state)
        log.info("link %s:%s %s", node, network, state)

    def _write_sysctl(self, node: str, key: str, value: str) -> None:
        write_sysctls(self.namespace(node), {key: value})

    def link_down(self, node: str, network: str) -> None:
        self._set_cable(node, network, "down")

    def link_up(self, node: str, network: str) -> None:
        self._set_cable(node, network, "up")

    @contextlib.contextmanager
    def capture(self, network: str, name: str, bpf: str = "") -> Iterator[Capture]:
        bridge = self._bridge(network)
        if not (NETNS_DIR / self.lab_ns).exists():
            raise LabError(f"the lab is not up (no namespace {self.lab_ns})")
        path = self.workdir / "captures" / f"{name}.pcap"
        with tcpdump(
            bridge,
            path,
            bpf,
            prefix=("ip", "netns", "exec", self.lab_ns),
            started=lambda pid: self._record.add_pid(pid, self.lab_ns, f"capture.{name}"),
            stopped=self._record.drop_pid,
        ):
            yield Capture(network=network, path=path)

    # -- files and programs ------------------------------------------------------------------
    def node_path(self, host_path: Path) -> str:
        return str(host_path)

    def vpn_argv(self) -> list[str]:
        return [sys.executable, "-m", "vpn"]

    def host(self, node: str) -> testinfra.host.Host:
        from lab.testinfra_netns import get_host

        return get_host(self.namespace(node))


# -- the record ------------------------------------------------------------------------------
class _Record:
    """workdir/state.json: what this run created, written before each thing exists."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._data: dict[str, Any] | None = None

    def exists(self) -> bool:
        return self.path.exists()

    def load(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise LabError(
                f"{self.path} is not valid JSON ({exc}): inspect and remove it"
            ) from None

    def begin(self, run_id: str, prefix: str, namespaces: list[str], etc_dirs: list[str]) -> None:
        self._data = {
            "backend": "netns",
            "run_id": run_id,
            "prefix": prefix,
            "namespaces": namespaces,
            "etc_dirs": etc_dirs,
            "pids": [],
        }
        self._save()

    def add_pid(self, pid: int, ns: str, name: str) -> None:
        with self._lock:
            if self._data is None:
                self._data = self.load() or {"namespaces": [], "etc_dirs": [], "pids": []}
            self._data["pids"].append(
                {"pid": pid, "start": start_time(pid), "ns": ns, "name": name}
            )
            self._save()

    def drop_pid(self, pid: int) -> None:
        with self._lock:
            if self._data is not None and self.path.exists():
                self._data["pids"] = [p for p in self._data["pids"] if p["pid"] != pid]
                self._save()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._data, indent=1))
        os.replace(tmp, self.path)

    def remove(self) -> None:
        with self._lock:
            self.path.unlink(missing_ok=True)
            self._data = None


# -- kernel helpers --------------------------------------------------------------------------
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def write_sysctls(ns: str, values: dict[str, str]) -> None:
    """Write net.* sysctls inside ns, from a short-lived thread that joins ns (/proc/sys/net
    shows the calling thread's namespace) — no process to start."""
    errors: list[BaseException] = []

    def work() -> None:
        try:
            fd = os.open(NETNS_DIR / ns, os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into {ns} failed")
            finally:
                os.close(fd)
            for key, value in values.items():
                path = Path("/proc/sys") / key.replace(".", "/")
                try:
                    path.write_text(f"{value}\n")
                except OSError as exc:
                    raise LabError(f"{ns}: cannot set sysctl {key}={value}: {exc}") from None
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=work, name=f"sysctl-{ns}")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def remove_netns(ns: str) -> None:
    """`ip netns del`: detach and unlink the name; the kernel frees the namespace (and its
    veths) once no process or socket holds it. Without pyroute2, whose import costs 0.3 s."""
    path = NETNS_DIR / ns
    if not path.exists():
        return
    _libc.umount2(str(path).encode(), MNT_DETACH)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _ns_id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def pids_in(namespaces: set[tuple[int, int]]) -> list[int]:
    """Live processes whose network namespace is one of namespaces (as `ip netns pids`)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            ns = _ns_id(Path(entry.path) / "ns" / "net")
            if ns in namespaces:
                found.append(int(entry.name))
    return found


def _terminate(pids: list[int], timeout: float, reap: Callable[[], None]) -> None:
    """SIGTERM, then SIGKILL what is still alive after timeout; reap() collects our children."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while True:
            reap()
            pids = [p for p in pids if alive(p)]
            if not pids or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        if not pids:
            return
    log.warning("processes still alive after SIGKILL: %s", pids)


def _killpg(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _status(returncode: int) -> int:
    """Popen's -N for a signal → 128+N, the status a shell (and Docker) reports."""
    return 128 - returncode if returncode < 0 else returncode


def _child_env() -> dict[str, str]:
    """The caller's environment, plus the repository on PYTHONPATH so `python -m vpn` works."""
    env = dict(os.environ)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(REPO_ROOT) not in paths:
        env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *paths])
    return env


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
