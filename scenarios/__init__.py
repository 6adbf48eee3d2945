"""The lab's scenarios: one module each, each defining SCENARIO (a runner.Scenario)."""

from __future__ import annotations

import importlib
import pkgutil

from scenarios.runner import Scenario

_SUPPORT = {"runner", "tunnel", "pcap"}


def all_scenarios() -> dict[str, Scenario]:
    """Every module of this package that defines SCENARIO, by scenario name, in file order."""
    found: dict[str, Scenario] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_") or info.name in _SUPPORT:
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        scenario = getattr(module, "SCENARIO", None)
        if isinstance(scenario, Scenario):
            found[scenario.name] = scenario
    return found
