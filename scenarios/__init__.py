"""The lab's scenarios: one module each (tun_io.py is scenario "tun-io"), each defining SCENARIO."""

from __future__ import annotations

import importlib
import pkgutil

from scenarios.runner import Scenario

_SUPPORT = {"runner", "tunnel", "pcap", "probes", "lab_checks", "lab_faults"}


def names() -> list[str]:
    """Every scenario's name, from the module names alone (nothing imported)."""
    modules = sorted(m.name for m in pkgutil.iter_modules(__path__))
    return [m.replace("_", "-") for m in modules if not m.startswith("_") and m not in _SUPPORT]


def load(name: str) -> Scenario:
    module = importlib.import_module(f"{__name__}.{name.replace('-', '_')}")
    scenario = getattr(module, "SCENARIO", None)
    if not isinstance(scenario, Scenario) or scenario.name != name:
        raise LookupError(f"scenarios/{module.__name__}.py must define SCENARIO named {name!r}")
    return scenario


def all_scenarios() -> dict[str, Scenario]:
    return {name: load(name) for name in names()}
