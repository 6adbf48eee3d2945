"""Fixtures for tests on the real kernel: one throwaway network namespace per test.

After pyroute2's own fixtures: every namespace gets a unique name and is removed in teardown, on
failure too, together with every process left running in it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns

from lab import procfs
from tests.netns.harness import Testbed

TUN_PATH = "/dev/net/tun"
ROOT_REASON = "needs root for network namespaces and TUN devices (run as root: sudo make test)"
TUN_REASON = (
    f"{TUN_PATH} is missing on this machine (modprobe tun; in a container: --device {TUN_PATH})"
)
NETNS_DIR = "/run/netns"

T = TypeVar("T")

# Processes started through `spawn_in_netns`, per namespace, ended in that namespace's teardown.
_PROCS: dict[str, list[subprocess.Popen[str]]] = {}


def unique_netns_name() -> str:
    return f"vpnt-{secrets.token_hex(4)}"


@pytest.fixture
def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip(ROOT_REASON)


@pytest.fixture
def require_tun(require_root: None) -> None:
    if not os.path.exists(TUN_PATH):
        pytest.skip(TUN_REASON)


def _lo_up() -> None:
    with IPRoute() as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")


def _call_in_netns(ns: str, fn: Callable[..., T], *args: Any) -> T:
    """Run fn(*args) on a short-lived thread that lives in namespace `ns`.

    setns() moves only the calling thread, so the test's own thread stays where it is. Sockets
    and TUN fds created by fn belong to `ns` and stay usable from any thread.
    """
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            pr_netns.setns(ns, flags=0)
            outcome["value"] = fn(*args)
        except BaseException as err:
            outcome["error"] = err

    thread = threading.Thread(target=run, name=f"in-{ns}")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _pids_in(ns: str) -> list[int]:
    """Processes whose (main thread's) network namespace is `ns`, except this one."""
    target = procfs.net_ns(os.path.join(NETNS_DIR, ns))
    if target is None:
        return []
    return [pid for pid in procfs.pids_in({target}) if pid != os.getpid()]


def _teardown_netns(ns: str) -> None:
    """End what runs in `ns` (all of it was started by this test), then remove the name."""
    for proc in _PROCS.pop(ns, []):
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
    for pid in _pids_in(ns):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(FileNotFoundError):
        pr_netns.remove(ns)


@pytest.fixture
def netns(require_root: None) -> Iterator[str]:
    """A fresh, named network namespace with lo up; removed after the test."""
    name = unique_netns_name()
    pr_netns.create(name)
    try:
        _call_in_netns(name, _lo_up)
        yield name
    finally:
        _teardown_netns(name)


@pytest.fixture
def inside_netns(require_root: None) -> Iterator[str]:
    """Run the test's own thread inside a fresh named namespace (lo up); yields its name.

    A TUN opened, a NetConf made or a subprocess started by the test then lives in it. The
    thread returns to its original namespace afterwards, and the namespace is removed.
    """
    name = unique_netns_name()
    pr_netns.create(name)
    try:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        home_id = os.readlink("/proc/thread-self/ns/net")
        try:
            pr_netns.setns(name, flags=0)
            try:
                _lo_up()
                yield name
            finally:
                pr_netns.setns(home, flags=0)
            assert os.readlink("/proc/thread-self/ns/net") == home_id, "not back home"
        finally:
            os.close(home)
    finally:
        _teardown_netns(name)


def _run_in_netns(
    ns: str, argv: Sequence[str], timeout: float = 10.0, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run argv inside namespace `ns` (`ip netns exec`), wait, and capture its output."""
    return subprocess.run(
        ["ip", "netns", "exec", ns, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
    )


def _spawn_in_netns(ns: str, argv: Sequence[str], **popen: Any) -> subprocess.Popen[str]:
    """Start argv inside `ns` without waiting; it is killed in the namespace's teardown."""
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], text=True, **popen)
    _PROCS.setdefault(ns, []).append(proc)
    return proc


@pytest.fixture
def run_in_netns() -> Callable[..., subprocess.CompletedProcess[str]]:
    """run_in_netns(ns, argv, timeout=10.0, check=False) -> CompletedProcess."""
    return _run_in_netns


@pytest.fixture
def spawn_in_netns() -> Callable[..., subprocess.Popen[str]]:
    """spawn_in_netns(ns, argv, **popen) -> Popen, ended with the namespace."""
    return _spawn_in_netns


@pytest.fixture
def call_in_netns() -> Callable[..., Any]:
    """call_in_netns(ns, fn, *args) -> fn's result, computed on a thread inside `ns`."""
    return _call_in_netns


@pytest.fixture
def bed(tmp_path: Path) -> Iterator[Testbed]:
    """The VPN testbed of tests/netns/harness.py: gateway, LAN host, clients added by the test;
    every namespace and process removed afterwards, and the VPN logs printed for a failure."""
    testbed = Testbed(tmp_path).up()
    try:
        yield testbed
    finally:
        logs = {p.log.name: p.output()[-3000:] for p in testbed.processes}
        testbed.down()
        assert testbed.leftovers() == [], "namespaces left behind"
        for name, text in logs.items():
            print(f"--- {name}\n{text}")
