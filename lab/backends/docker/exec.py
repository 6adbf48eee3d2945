"""Commands on a container: exec through the engine's API (with a timeout the API itself lacks),
and long-running programs spawned with their pid, log and exit status kept under /lab.
"""

from __future__ import annotations

import contextlib
import shlex
import signal as signals
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from docker import APIClient
from docker.utils.socket import STDERR, frames_iter

from lab.backends.base import ExecTimeout, Process
from lab.backends.docker.nodes import NAME, DockerNodes
from lab.model import LabError

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


class DockerExec(DockerNodes):
    """exec, spawn, signal and wait of the Docker backend."""

    def _run(
        self, node: str, argv: Sequence[str], *, timeout: float, input: bytes | None
    ) -> subprocess.CompletedProcess[str]:
        container = self.container(node)
        api = container.client.api  # the engine that runs this node (a swarm has several)
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
            raise ExecTimeout(node, argv, timeout)
        if "error" in result:
            raise LabError(f"{node}: exec of `{shlex.join(argv)}` failed: {result['error']}")
        out, err = result["out"] or (None, None)
        stdout = (out or b"").decode(errors="replace")
        stderr = (err or b"").decode(errors="replace")
        code = self._exit_code(api, exec_id)
        if code in (124, 137) and elapsed >= timeout - 0.05:
            raise ExecTimeout(node, argv, timeout, stdout, stderr)
        return subprocess.CompletedProcess(list(argv), code, stdout, stderr)

    def spawn(self, node: str, argv: Sequence[str], *, name: str) -> Process:
        if not NAME.fullmatch(name):
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

    def _exit_code(self, api: APIClient, exec_id: str) -> int:
        for _ in range(100):
            info = api.exec_inspect(exec_id)
            if not info.get("Running") and info.get("ExitCode") is not None:
                return int(info["ExitCode"])
            time.sleep(0.02)
        raise LabError(f"exec {exec_id[:12]} reports no exit code")

    def _run_files(self, process: Process) -> tuple[Path, Path]:
        run = self.workdir / "run"
        return run / f"{process.name}.pid", run / f"{process.name}.status"
