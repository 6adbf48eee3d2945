"""One-shot probes of a node: ping, with its numbers read."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

from lab.backends.base import Backend


@dataclass
class Ping:
    ok: bool  # every echo answered
    transmitted: int
    received: int
    loss: float  # percent
    rtt_avg_ms: float | None
    output: str  # stdout and stderr, for what ping said about errors

    @property
    def summary(self) -> str:
        return f"{self.received}/{self.transmitted} answered, {self.loss:g}% loss"


def ping(
    backend: Backend,
    node: str,
    target: str,
    *flags: str,
    count: int = 1,
    size: int | None = None,
    wait: float = 2,
) -> Ping:
    """ping with its numbers read; flags e.g. ("-M", "do")."""
    argv = ["ping", "-n", "-c", str(count), "-i", "0.2", "-W", f"{wait:g}", *flags]
    if size is not None:
        argv += ["-s", str(size)]
    done = backend.exec(node, [*argv, target], timeout=count * 0.2 + wait + 10)
    return parse_ping(done)


def parse_ping(done: subprocess.CompletedProcess[str]) -> Ping:
    text = done.stdout + done.stderr
    counts = re.search(r"(\d+) packets transmitted, (\d+) received", text)
    loss = re.search(r"([\d.]+)% packet loss", text)
    rtt = re.search(r"= [\d.]+/([\d.]+)/", text)
    return Ping(
        ok=done.returncode == 0,
        transmitted=int(counts[1]) if counts else 0,
        received=int(counts[2]) if counts else 0,
        loss=float(loss[1]) if loss else 100.0,
        rtt_avg_ms=float(rtt[1]) if rtt else None,
        output=text.strip(),
    )
