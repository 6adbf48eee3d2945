"""Link impairment — rate, loss, delay, jitter, duplication, corruption — on a node's interface,
the one implementation the `vpnlab impair` verb, `vpnlab up` and the impairment scenario use.

Rate is a tc tbf qdisc and loss an iptables `statistic` match, so both work on kernels without
netem; delay, jitter, duplication and corruption need sch_netem, and are refused with a message
naming it where the kernel lacks it (rather than silently leaving the link unimpaired).

Declared in the compose files as a label of the node, one per network (see docs/cli.md and
compose/slow-link.yml):

    labels:
      vpnlab.impair.internet: "rate=8mbit loss=2%"
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from lab.backends.base import Backend
from lab.model import LabError, Topology

NO_NETEM = "the kernel has no netem (module sch_netem)"
LABEL_PREFIX = "vpnlab.impair."
RULE_COMMENT = "vpnlab-impair"  # marks the iptables rules this module adds, to remove only them
TBF_SHAPE = ["burst", "32kb", "latency", "100ms"]
_RATE = re.compile(r"\d+(\.\d+)?([kmg]?bit|[kmg]?bps)", re.I)
_TIME = re.compile(r"\d+(\.\d+)?(ms|us|s)")


@dataclass(frozen=True)
class Impairment:
    """What to do to one interface's traffic; None leaves that aspect alone."""

    rate: str | None = None  # tc syntax: 10mbit, 512kbit
    loss: float | None = None  # percent, each direction
    delay: str | None = None  # 50ms (netem)
    jitter: str | None = None  # 10ms, with delay (netem)
    duplicate: float | None = None  # percent (netem)
    corrupt: float | None = None  # percent (netem)

    @property
    def needs_netem(self) -> bool:
        return any(v is not None for v in (self.delay, self.jitter, self.duplicate, self.corrupt))

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def describe(self) -> str:
        parts = [
            f"{k} {v}%" if isinstance(v, float) else f"{k} {v}" for k, v in self.as_dict().items()
        ]
        return ", ".join(parts) or "none"


def percent(value: object) -> float:
    """'2%', '2' or 2 → 2.0 (a LabError for anything outside 0–100)."""
    try:
        number = float(str(value).strip().rstrip("%"))
    except ValueError:
        raise LabError(f"{value!r} is not a percentage (e.g. 2%)") from None
    if not 0 <= number <= 100:
        raise LabError(f"{value!r}: a percentage lies between 0 and 100")
    return number


def parse(settings: Mapping[str, Any], where: str = "") -> Impairment:
    """An Impairment from a mapping such as {rate: 8mbit, loss: 2%} (compose or command line)."""
    known = {f.name for f in fields(Impairment)}
    unknown = set(settings) - known
    if unknown:
        raise LabError(
            f"{where}unknown impairment {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(known))}"
        )
    values: dict[str, Any] = {}
    for key, value in settings.items():
        if value is None:
            continue
        if key in ("loss", "duplicate", "corrupt"):
            values[key] = percent(value)
        elif key == "rate":
            if not _RATE.fullmatch(str(value)):
                raise LabError(
                    f"{where}rate {value!r}: write it as tc does, e.g. 10mbit or 512kbit"
                )
            values[key] = str(value)
        else:
            if not _TIME.fullmatch(str(value)):
                raise LabError(f"{where}{key} {value!r}: write a time, e.g. 50ms")
            values[key] = str(value)
    return Impairment(**values)


# -- where declared --------------------------------------------------------------------------
def declared(topology: Topology) -> dict[str, Impairment]:
    """The impairments the compose files declare: "node:network" → Impairment, from each node's
    labels `vpnlab.impair.NETWORK: "rate=8mbit loss=1%"`."""
    found: dict[str, Impairment] = {}
    for node in topology.nodes.values():
        for key, value in node.labels.items():
            if not key.startswith(LABEL_PREFIX):
                continue
            network = key.removeprefix(LABEL_PREFIX)
            where = f"{node.name}: label {key}: "
            if network not in node.networks:
                raise LabError(f"{where}{node.name} is not on network {network!r}")
            settings = dict(word.partition("=")[::2] for word in value.split())
            found[f"{node.name}:{network}"] = parse(settings, where=where)
    return found


def resolve(topology: Topology, backend: Backend, link: str) -> tuple[str, str, str]:
    """ "node:network" or "node:interface" → (node, network, interface)."""
    node, sep, side = link.partition(":")
    if not sep or not side:
        raise LabError(f"{link!r}: write NODE:NETWORK or NODE:IFACE, e.g. client:internet")
    try:
        networks = topology.node(node).networks
    except KeyError as exc:
        raise LabError(exc.args[0]) from None
    if side in networks:
        return node, side, backend.interface(node, side)
    for network in networks:
        if backend.interface(node, network) == side:
            return node, network, side
    raise LabError(
        f"{node} has no network or interface {side!r}; its networks: {', '.join(networks)}"
    )


# -- applying --------------------------------------------------------------------------------
def tbf_argv(interface: str, rate: str) -> list[str]:
    return ["tc", "qdisc", "replace", "dev", interface, "root", "tbf", "rate", rate, *TBF_SHAPE]


def loss_rules(interface: str, loss_percent: float) -> list[list[str]]:
    """iptables rules (without -A/-D) dropping that share of packets each way on interface:
    the node's own traffic and what it forwards."""
    drop = ["-m", "statistic", "--mode", "random", "--probability", f"{loss_percent / 100:g}"]
    tag = ["-m", "comment", "--comment", RULE_COMMENT, "-j", "DROP"]
    return [
        ["INPUT", "-i", interface, *drop, *tag],
        ["OUTPUT", "-o", interface, *drop, *tag],
        ["FORWARD", "-i", interface, *drop, *tag],
        ["FORWARD", "-o", interface, *drop, *tag],
    ]


def netem_argv(interface: str, impairment: Impairment) -> list[str]:
    argv = ["tc", "qdisc", "replace", "dev", interface, "root", "netem"]
    if impairment.delay or impairment.jitter:
        argv += [
            "delay",
            impairment.delay or "0ms",
            *([impairment.jitter] if impairment.jitter else []),
        ]
    if impairment.duplicate is not None:
        argv += ["duplicate", f"{impairment.duplicate:g}%"]
    if impairment.corrupt is not None:
        argv += ["corrupt", f"{impairment.corrupt:g}%"]
    if impairment.rate:
        argv += ["rate", impairment.rate]
    return argv


def clear(backend: Backend, node: str, interface: str) -> None:
    """Remove every qdisc and loss rule this module put on interface (no error if none)."""
    backend.exec(node, ["tc", "qdisc", "del", "dev", interface, "root"])
    _clear_loss_rules(backend, node, interface)


def _clear_loss_rules(backend: Backend, node: str, interface: str) -> None:
    listing = backend.ensure(node, ["iptables", "-S"])
    for line in listing.splitlines():
        words = line.split()
        if words[:1] == ["-A"] and RULE_COMMENT in words and interface in words:
            backend.ensure(node, ["iptables", "-D", *words[1:]])


def apply(backend: Backend, node: str, interface: str, impairment: Impairment) -> None:
    """Replace whatever impaired interface before with `impairment`. When it needs netem and the
    kernel has none, a LabError naming sch_netem, and the link is left as it was."""
    if impairment.needs_netem:
        argv = netem_argv(interface, impairment)
        done = backend.exec(node, argv)
        said = (done.stderr or done.stdout).strip()
        if done.returncode != 0:
            if "unknown" in said.lower() or "no such file" in said.lower():
                raise LabError(
                    f"{node}:{interface}: delay, jitter, duplicate and corrupt need netem, and "
                    f"{NO_NETEM}: load it on the host (modprobe sch_netem) or impair only rate "
                    f"and loss — tc said: {said}"
                )
            raise LabError(f"{node}: `{' '.join(argv)}` failed: {said}")
    elif impairment.rate:
        backend.ensure(node, tbf_argv(interface, impairment.rate))
    else:
        backend.exec(node, ["tc", "qdisc", "del", "dev", interface, "root"])
    _clear_loss_rules(backend, node, interface)
    if impairment.loss:
        for rule in loss_rules(interface, impairment.loss):
            backend.ensure(node, ["iptables", "-A", *rule])


# -- what is in force (for inspect) ----------------------------------------------------------
def _state_path(backend: Backend) -> Path:
    return backend.workdir / "impairments.json"


def in_force(backend: Backend) -> dict[str, dict[str, Any]]:
    """ "node:interface" → the impairment last applied there through this module."""
    try:
        data: dict[str, dict[str, Any]] = json.loads(_state_path(backend).read_text())
    except FileNotFoundError:
        return {}
    return data


def remember(backend: Backend, node: str, interface: str, impairment: Impairment | None) -> None:
    state = in_force(backend)
    key = f"{node}:{interface}"
    if impairment is None or not impairment.as_dict():
        state.pop(key, None)
    else:
        state[key] = impairment.as_dict()
    _state_path(backend).parent.mkdir(parents=True, exist_ok=True)
    _state_path(backend).write_text(json.dumps(state, indent=1) + "\n")
