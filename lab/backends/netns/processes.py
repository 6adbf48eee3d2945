"""Commands in a node's namespace: exec and spawn through `ip netns exec`, each in its own
session so a timeout or a stop reaches the whole process group; and ending what a run started.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from lab.backends.base import ExecTimeout, Process
from lab.backends.netns.nodes import NetnsNodes
from lab.model import LabError
from lab.procfs import alive

log = logging.getLogger("lab.backends.netns")
REPO_ROOT = Path(__file__).resolve().parents[3]


class NetnsProcesses(NetnsNodes):
    """exec, spawn, signal and wait of the netns backend."""

    def _run(
        self, node: str, argv: Sequence[str], *, timeout: float, input: bytes | None
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
                killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
                raise ExecTimeout(node, argv, timeout) from None
        return subprocess.CompletedProcess(
            list(argv),
            exit_status(proc.returncode),
            out.decode(errors="replace"),
            err.decode(errors="replace"),
        )

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
            killpg(proc.pid, sig)

    def wait(self, process: Process, timeout: float) -> int | None:
        try:
            return self._proc(process).wait(timeout)  # -N for signal N, as Backend.wait says
        except subprocess.TimeoutExpired:
            return None

    def _reap(self) -> None:
        for proc in self._procs.values():
            proc.poll()


def terminate(pids: list[int], timeout: float, reap: Callable[[], None]) -> None:
    """SIGTERM, then SIGKILL what is still alive after timeout; reap() collects our children."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        # A SIGKILLed process cannot refuse, only be slow to go on a loaded machine: wait longer.
        deadline = time.monotonic() + (timeout if sig == signal.SIGTERM else max(timeout, 10))
        while True:
            reap()
            pids = [p for p in pids if alive(p)]
            if not pids or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        if not pids:
            return
    log.warning("processes still alive after SIGKILL: %s", pids)


def killpg(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def exit_status(returncode: int) -> int:
    """Popen's -N for a signal → 128+N, the status a shell (and Docker) reports."""
    return 128 - returncode if returncode < 0 else returncode


def _child_env() -> dict[str, str]:
    """The caller's environment, plus the repository on PYTHONPATH so `python -m vpn` works."""
    env = dict(os.environ)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(REPO_ROOT) not in paths:
        env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *paths])
    return env


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
