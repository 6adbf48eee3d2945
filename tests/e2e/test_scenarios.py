"""Every scenario in scenarios/ on every backend: it must pass, step by step, and write its
results file. A scenario module may add its own checks on the result (`verify`)."""

from __future__ import annotations

import importlib
import json

import pytest

from scenarios import load, names
from scenarios.runner import RESULTS, execute


@pytest.mark.parametrize("name", names())
def test_scenario(name: str, backend_name: str) -> None:
    scenario = load(name)
    lines: list[str] = []
    result = execute(scenario, backend_name, out=lines.append)
    report = "\n".join(lines)
    if result.skipped:
        pytest.skip(f"{name}: {result.skipped}")
    assert result.steps, report
    failed = [f"{s.name}: {s.detail}" for s in result.steps if s.status == "failed"]
    assert not failed, report
    assert result.passed and result.status == "passed", report
    saved = json.loads((RESULTS / f"{name}.json").read_text())
    assert saved["scenario"] == name and saved["backend"] == backend_name and saved["passed"]
    assert {"name", "passed", "status", "detail"} <= set(saved["steps"][0])
    for step in saved["steps"]:  # a skipped step carries its reason and never counts as passed
        assert step["status"] in ("passed", "skipped"), step
        assert step["passed"] == (step["status"] == "passed"), step
    verify = getattr(importlib.import_module(scenario.run.__module__), "verify", None)
    if verify is not None:
        verify(result)
