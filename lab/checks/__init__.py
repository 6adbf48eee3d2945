"""Expectations about a running lab, written in YAML by a teacher or a CI job (`vpnlab check`).

    name: through the tunnel
    checks:
      - client -> gateway: reachable
      - client -> host1: reachable via tun0     # pings answered and `ip route get` uses tun0
      - client -> host1: unreachable
      - client -> host1: route via tun0         # the route only, no ping
      - segment internet: only tls while client -> host1
      - gateway: port 4433 open                 # listening (tcp; `port 53/udp open` for UDP)
      - gateway: port 22 closed

A target is a node name (its address on a network both share, else its first address) or an
IP address. This module only parses; lab.checks.probes runs each expectation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lab.model import LabError


@dataclass(frozen=True)
class Expectation:
    """One line of a check file, parsed: `kind` selects the probe, the rest are its inputs."""

    text: str  # the line as written, shown in the ✓/✗ table
    kind: str  # reachable | unreachable | route | only-tls | port-open | port-closed
    source: str = ""
    target: str = ""
    via: str = ""
    segment: str = ""
    port: int = 0
    protocol: str = "tcp"


_PAIR = re.compile(r"^\s*(\S+)\s*->\s*(\S+)\s*$")
_REACH = re.compile(r"^(reachable|unreachable)(?:\s+via\s+(\S+))?$")
_ROUTE = re.compile(r"^route\s+via\s+(\S+)$")
_TLS = re.compile(r"^only\s+tls\s+while\s+(\S+)\s*->\s*(\S+)$")
_PORT = re.compile(r"^port\s+(\d+)(?:/(tcp|udp))?\s+(open|closed)$")


def parse_line(key: str, value: str) -> Expectation:
    text = f"{key}: {value}"
    value = " ".join(str(value).split())
    if pair := _PAIR.match(key):
        source, target = pair.groups()
        if reach := _REACH.match(value):
            return Expectation(text, reach[1], source, target, via=reach[2] or "")
        if route := _ROUTE.match(value):
            return Expectation(text, "route", source, target, via=route[1])
    elif key.startswith("segment "):
        if tls := _TLS.match(value):
            segment = key.removeprefix("segment ").strip()
            return Expectation(text, "only-tls", tls[1], tls[2], segment=segment)
    elif port := _PORT.match(value):
        return Expectation(
            text,
            f"port-{port[3]}",
            source=key.strip(),
            port=int(port[1]),
            protocol=port[2] or "tcp",
        )
    raise LabError(
        f"cannot read the check {text!r}: write `A -> B: reachable [via IF]`, `A -> B: "
        "unreachable`, `A -> B: route via IF`, `segment NET: only tls while A -> B` or "
        "`NODE: port N[/tcp|udp] open|closed`"
    )


@dataclass(frozen=True)
class CheckFile:
    name: str
    path: Path
    expectations: tuple[Expectation, ...]


def load(path: Path) -> CheckFile:
    """A check file, every line parsed (LabError naming the first line it cannot read)."""
    try:
        data: Any = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise LabError(f"{path}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("checks"), list):
        raise LabError(f"{path}: expected a mapping with a `checks:` list")
    expectations = []
    for item in data["checks"]:
        if not isinstance(item, dict) or len(item) != 1:
            raise LabError(f"{path}: each check is one `KEY: VALUE` line, not {item!r}")
        ((key, value),) = item.items()
        try:
            expectations.append(parse_line(str(key), str(value)))
        except LabError as exc:
            raise LabError(f"{path}: {exc}") from None
    return CheckFile(str(data.get("name") or path.stem), path, tuple(expectations))
