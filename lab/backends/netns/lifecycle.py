"""Bringing a netns lab up — namespaces, bridges and veths, sysctls, node commands, health —
and down again from its state record, even from a fresh process after a crash.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import signal
import subprocess
import time

from lab.backends import base
from lab.backends.netns.kernel import (
    BASE_SYSCTLS,
    ETC_NETNS_DIR,
    IFA_F_NODAD,
    IFNAMSIZ,
    IPV6_SYSCTLS,
    NETNS_DIR,
    remove_netns,
    write_sysctls,
)
from lab.backends.netns.processes import NetnsProcesses, exit_status, killpg, log_tail, terminate
from lab.backends.netns.record import namespace_ids, recorded_pids
from lab.model import LabError
from lab.procfs import pids_in

log = logging.getLogger("lab.backends.netns")


def require_root() -> None:
    """LabError unless root: namespaces, veths and bridges are root's to make."""
    base.require_root("network namespaces")


class NetnsLifecycle(NetnsProcesses):
    """up() and down() of the netns backend."""

    def preflight(self) -> None:
        require_root()
        base.require_tun()

    def up(self) -> None:
        self.preflight()
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
        self._record.begin(self.name, self.run_id, self.prefix, namespaces, etc_dirs)
        for ns in namespaces:
            try:
                netns.create(ns)
            except OSError as exc:
                raise LabError(f"cannot create network namespace {ns}: {exc}") from exc
        for ns in namespaces:
            write_sysctls(ns, BASE_SYSCTLS)
        for node in self.topology.nodes.values():
            if any(self.topology.network(n).dual_stack for n in node.networks):
                write_sysctls(self.namespace(node.name), IPV6_SYSCTLS)
        self._write_hosts_files()
        log.info("namespaces: %s", " ".join(namespaces))

    def _write_hosts_files(self) -> None:
        """/etc/netns/NS/hosts: `ip netns exec` mounts it over /etc/hosts, so node names resolve
        as Docker's DNS resolves them (the addresses on a network both nodes share: IPv4, and
        IPv6 on a dual-stack one)."""
        for node in self.topology.nodes.values():
            lines = ["127.0.0.1\tlocalhost", f"127.0.1.1\t{node.name}"]
            for other in self.topology.nodes.values():
                if other.name == node.name:
                    continue
                shared = [a for a in other.attachments if a.network in node.networks]
                if shared:
                    lines += [f"{address}\t{other.name}" for address in shared[0].addresses]
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
                        net = self.topology.network(attachment.network)
                        ipr.addr(
                            "add",
                            index=inner,
                            address=str(attachment.address),
                            prefixlen=net.subnet.prefixlen,
                        )
                        if attachment.address6 is not None and net.subnet6 is not None:
                            ipr.addr(
                                "add",
                                index=inner,
                                address=str(attachment.address6),
                                prefixlen=net.subnet6.prefixlen,
                                flags=IFA_F_NODAD,
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
                    killpg(check.pid, signal.SIGKILL)
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
                tail = log_tail(self.workdir / "logs" / f"node.{node}.log")
                raise LabError(
                    f"node {node}: its command `{shlex.join(self.topology.node(node).command)}` "
                    f"exited with status {exit_status(proc.returncode)}: {tail or '(no output)'}"
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
        inodes = namespace_ids(namespaces, NETNS_DIR)
        victims = recorded_pids(record, inodes)
        victims += [pid for pid in pids_in(set(inodes.values())) if pid not in victims]
        terminate(victims, self.stop_timeout, self._reap)
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
