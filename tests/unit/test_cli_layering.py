"""Layers across packages: scenarios build on lab; only the command line (lab.cli) and the
check files' probes (lab.checks), which sit on top of both, may import scenarios — and nothing
in scenarios imports them back, so no cycle runs through the two packages."""

from __future__ import annotations

from tests.unit.test_architecture import find_cycle, graph

TOP_OF_LAB = ("lab.cli", "lab.checks")


def _on_top(module: str) -> bool:
    return any(module == top or module.startswith(top + ".") for top in TOP_OF_LAB)


def test_only_the_command_line_and_checks_import_scenarios() -> None:
    offenders = {
        module: sorted(d for d in deps if d.startswith("scenarios"))
        for module, deps in graph().items()
        if module.startswith("lab") and not _on_top(module)
    }
    assert {m: d for m, d in offenders.items() if d} == {}


def test_scenarios_never_import_the_command_line_or_checks() -> None:
    offenders = {
        module: sorted(d for d in deps if _on_top(d))
        for module, deps in graph().items()
        if module.startswith("scenarios")
    }
    assert {m: d for m, d in offenders.items() if d} == {}


def test_no_cycle_through_lab_and_scenarios() -> None:
    edges = {
        m: {d for d in deps if d.split(".")[0] in ("lab", "scenarios")}
        for m, deps in graph().items()
        if m.split(".")[0] in ("lab", "scenarios")
    }
    assert find_cycle(edges) is None, find_cycle(edges)
