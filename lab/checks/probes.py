"""Each expectation of a check file, checked against the running lab with the scenarios' own
probes (scenarios.probes.ping, scenarios.pcap.judge): one implementation of each check."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass

from lab.backends.base import Backend
from lab.checks import CheckFile, Expectation
from lab.model import LabError

DEFAULT_VPN_PORT = "4433"


@dataclass
class Outcome:
    check: str
    kind: str
    passed: bool
    detail: str
    seconds: float = 0.0


def address_of(backend: Backend, source: str, target: str) -> str:
    """target's address as source should use it: on a network both share, else its first."""
    try:
        return str(ipaddress.ip_address(target))
    except ValueError:
        pass
    topology = backend.topology
    try:
        wanted = topology.node(target)
        shared = set(topology.node(source).networks)
    except KeyError as exc:
        raise LabError(exc.args[0]) from None
    for attachment in wanted.attachments:
        if attachment.network in shared:
            return str(attachment.address)
    return str(wanted.attachments[0].address)


def route_device(backend: Backend, source: str, address: str) -> str:
    """The device of source's route to address (`ip route get`), "" when there is none."""
    done = backend.exec(source, ["ip", "-o", "route", "get", address], timeout=10)
    words = done.stdout.split()
    return words[words.index("dev") + 1] if "dev" in words else ""


def _reach(backend: Backend, e: Expectation) -> tuple[bool, str]:
    from scenarios.probes import ping

    address = address_of(backend, e.source, e.target)
    device = route_device(backend, e.source, address)
    result = ping(backend, e.source, address, count=2, wait=1)
    if e.kind == "unreachable":
        return result.received == 0, f"{address}: {result.summary}"
    if e.via and device != e.via:
        return False, f"{address}: route via {device or 'none'}, not {e.via}; {result.summary}"
    return result.ok, f"{address} via {device or '?'}: {result.summary}"


def _route(backend: Backend, e: Expectation) -> tuple[bool, str]:
    address = address_of(backend, e.source, e.target)
    device = route_device(backend, e.source, address)
    return device == e.via, f"{address} dev {device or '(no route)'}"


def _only_tls(backend: Backend, e: Expectation) -> tuple[bool, str]:
    from scenarios.pcap import judge
    from scenarios.probes import ping

    gateways = [
        n for n in backend.topology.nodes.values() if n.labels.get("vpnlab.role") == "gateway"
    ]
    port = int(gateways[0].labels.get("vpnlab.vpn.port", DEFAULT_VPN_PORT)) if gateways else 443
    address = address_of(backend, e.source, e.target)
    name = f"check-{e.segment}-{time.strftime('%H%M%S')}"
    with backend.capture(e.segment, name) as capture:
        pinged = ping(backend, e.source, address, count=3, wait=1)
    verdict = judge(
        capture.path, port, {f"{e.target}'s address": ipaddress.ip_address(address).packed}
    )
    if verdict.tls == 0:
        return False, f"no TLS on {e.segment} while {e.source} pinged {address} ({pinged.summary})"
    if not verdict.only_tunnel:
        return False, "; ".join((verdict.others + verdict.leaks)[:4])
    return True, f"{verdict.tls} TLS segments, nothing else ({pinged.summary})"


def _port(backend: Backend, e: Expectation) -> tuple[bool, str]:
    flag = "-t" if e.protocol == "tcp" else "-u"
    listing = backend.ensure(e.source, ["ss", "-H", "-l", "-n", flag])
    listening = any(
        line.split()[3].rsplit(":", 1)[-1] == str(e.port)
        for line in listing.splitlines()
        if line.split()[3:]
    )
    state = "listening" if listening else "not listening"
    wanted = e.kind == "port-open"
    return listening == wanted, f"{e.port}/{e.protocol} {state} on {e.source}"


PROBES: dict[str, Callable[[Backend, Expectation], tuple[bool, str]]] = {
    "reachable": _reach,
    "unreachable": _reach,
    "route": _route,
    "only-tls": _only_tls,
    "port-open": _port,
    "port-closed": _port,
}


def run(
    backend: Backend, checks: CheckFile, out: Callable[[Outcome], None] = lambda _: None
) -> list[Outcome]:
    """Every expectation, in order; a probe that errors is that check's ✗ with the reason."""
    outcomes = []
    for expectation in checks.expectations:
        started = time.monotonic()
        try:
            passed, detail = PROBES[expectation.kind](backend, expectation)
        except (LabError, OSError, TimeoutError) as exc:
            passed, detail = False, str(exc)
        outcome = Outcome(
            expectation.text, expectation.kind, passed, detail, time.monotonic() - started
        )
        out(outcome)
        outcomes.append(outcome)
    return outcomes
