"""Packet capture with tcpdump, for both backends: start it, wait until it listens, and at the
end wait until every packet the kernel handed it is written before stopping it — a pcap that
misses the last packets would make a scenario's verdict wrong.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from lab.model import LabError


@contextlib.contextmanager
def tcpdump(
    interface: str,
    path: Path,
    bpf: str = "",
    *,
    prefix: Sequence[str] = (),
    started: Callable[[int], None] = lambda pid: None,
    stopped: Callable[[int], None] = lambda pid: None,
) -> Iterator[Path]:
    """Capture on `interface` (run under `prefix`, e.g. `ip netns exec NS`) into `path`."""
    binary = shutil.which("tcpdump")
    if binary is None:
        raise LabError("tcpdump is not installed on the host: `make deps` installs it")
    path.parent.mkdir(parents=True, exist_ok=True)
    # --immediate-mode: hand each packet over at once (not a block a second later); -U: write
    # it at once; -Z root: keep the right to write the run's files.
    argv = [binary, "-i", interface, "-n", "--immediate-mode", "-U", "-Z", "root", "-w", str(path)]
    proc = subprocess.Popen(
        [*prefix, *argv, *([bpf] if bpf else [])],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    started(proc.pid)
    stderr = _Lines(proc)
    try:
        listening = stderr.wait_for(lambda line: "listening on" in line, 15)
        if listening is None or proc.poll() is not None:
            raise LabError(f"tcpdump on {interface} did not start: {stderr.text()} (it needs root)")
        yield path
    finally:
        if proc.poll() is None:
            _drain(proc, stderr)
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
        stopped(proc.pid)


class _Lines:
    """The lines a child writes to its stderr pipe, read without blocking past a deadline."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        self.fd = proc.stderr.fileno()
        self.lines: list[str] = []
        self._partial = b""

    def wait_for(self, match: Callable[[str], bool], timeout: float) -> str | None:
        """The first new line that matches, or None at the deadline or the end of the pipe."""
        deadline = time.monotonic() + timeout
        start = len(self.lines)
        while True:
            for line in self.lines[start:]:
                if match(line):
                    return line
            start = len(self.lines)
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(self.fd, 4096)
            if not chunk:
                return None
            *complete, self._partial = (self._partial + chunk).split(b"\n")
            self.lines += [line.decode(errors="replace") for line in complete]

    def text(self) -> str:
        return "\n".join(self.lines[-8:]).strip() or "no output"


def _drain(proc: subprocess.Popen[bytes], stderr: _Lines, timeout: float = 3.0) -> None:
    """Wait until tcpdump has written every packet the kernel passed it, so that SIGINT loses
    none. SIGUSR1 makes it print "N packets captured, M packets received by filter, ..."."""
    counts = re.compile(r"(\d+) packets captured, (\d+) packets received by filter")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        proc.send_signal(signal.SIGUSR1)
        line = stderr.wait_for(lambda text: counts.search(text) is not None, 1)
        if line is None:
            return
        captured, received = map(int, counts.search(line).groups())  # type: ignore[union-attr]
        if captured >= received:
            return
        time.sleep(0.02)
