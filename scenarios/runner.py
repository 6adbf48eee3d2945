"""Running a scenario: bring the lab up, run its steps, print ✓/✗ lines, write results/NAME.json.

A scenario is a function of a `Context`; each step is a with-block (`with ctx.step("…") as s:`)
whose failure — an AssertionError, a LabError, a StepFailed — marks it ✗ with the reason and ends
the scenario. The lab is always taken down, whatever happened.

Every step and every result has one of three outcomes (`status`): passed, failed, or skipped with
its reason (the machine cannot do it, e.g. no netem). A skipped step is never counted as passed
(`passed` is False for it, kept for readers of the old field); a scenario fails only on a failed
step.
"""

from __future__ import annotations

import contextlib
import json
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lab.backends.base import Backend
from lab.model import LabError
from lab.run import running_lab

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = REPO_ROOT / "results"
OK, FAIL, SKIP = "✓", "✗", "-"
PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"
MARK = {PASSED: OK, FAILED: FAIL, SKIPPED: SKIP}


class StepFailed(Exception):
    """A step's check failed; the message is the reason shown after ✗."""


class Skipped(Exception):
    """The machine lacks what the scenario needs (the message says what); not a failure."""


@dataclass
class Step:
    name: str
    passed: bool = True
    detail: str = ""
    seconds: float = 0.0
    status: str = ""  # passed | failed | skipped; from `passed` when not given

    def __post_init__(self) -> None:
        if not self.status:
            self.status = PASSED if self.passed else FAILED
        self.passed = self.status == PASSED

    def set(self, status: str, detail: str | None = None) -> None:
        self.status, self.passed = status, status == PASSED
        if detail is not None:
            self.detail = detail


@dataclass
class Result:
    scenario: str
    backend: str
    passed: bool
    steps: list[Step] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    skipped: str = ""

    @property
    def status(self) -> str:
        """skipped (the whole scenario, `skipped` says why), failed (a step failed), or passed."""
        if self.skipped:
            return SKIPPED
        if not self.passed or any(step.status == FAILED for step in self.steps):
            return FAILED
        return PASSED

    def count(self, status: str) -> int:
        return sum(step.status == status for step in self.steps)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status
        for step in data["steps"]:
            step["seconds"] = round(step["seconds"], 3)
        data["seconds"] = round(self.seconds, 2)
        return data


@dataclass(frozen=True)
class Scenario:
    """One lab task: `run` drives it through the Context; `extra` names extra compose files."""

    name: str
    description: str
    run: Callable[[Context], None]
    extra: tuple[str, ...] = ()
    key_metric: str = ""


class Context:
    """What a scenario sees: the backend, step bookkeeping, metrics and a place for files."""

    def __init__(self, backend: Backend, result: Result, out: Callable[[str], None]) -> None:
        self.backend = backend
        self.topology = backend.topology
        self.result = result
        self.out = out

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[Step]:
        record = Step(name)
        self.result.steps.append(record)
        started = time.monotonic()
        try:
            yield record
        except Skipped:
            raise
        except Exception as exc:  # any failure inside a step is that step's ✗, bugs included
            detail = str(exc).strip()
            expected = isinstance(
                exc, AssertionError | StepFailed | LabError | OSError | TimeoutError
            )
            record.set(FAILED, detail if expected and detail else f"{type(exc).__name__}: {detail}")
            raise
        finally:
            record.seconds = time.monotonic() - started
            mark = MARK[record.status]
            detail = f" — {record.detail}" if record.detail else ""
            self.out(f"  {mark} {name}{detail} ({record.seconds:.1f} s)")

    def check(self, name: str, passed: bool, detail: str = "") -> None:
        """A one-line step: passed or not, with its detail."""
        with self.step(name) as step:
            step.detail = detail
            if not passed:
                raise StepFailed(detail or "check failed")

    def skip(self, name: str, reason: str) -> Step:
        """A step the machine cannot do: recorded as skipped with its reason, never as passed."""
        record = Step(name, passed=False, detail=f"skipped: {reason}", status=SKIPPED)
        self.result.steps.append(record)
        self.out(f"  {SKIP} {name} — skipped: {reason}")
        return record

    def metric(self, key: str, value: Any) -> None:
        self.result.metrics[key] = value

    @property
    def results_dir(self) -> Path:
        RESULTS.mkdir(exist_ok=True)
        return RESULTS


def execute(
    scenario: Scenario,
    backend_name: str | None = None,
    *,
    keep: bool = False,
    out: Callable[[str], None] = print,
) -> Result:
    """Run one scenario on a fresh lab and write results/NAME.json; never raises for a failure."""
    started = time.monotonic()
    result = Result(scenario=scenario.name, backend=backend_name or "", passed=False)
    out(f"{scenario.name}: {scenario.description}")
    try:
        with running_lab(
            backend_name, scenario.extra, keep=keep, progress=lambda m: out(f"  · {m}")
        ) as lab:
            result.backend = lab.name
            scenario.run(Context(lab, result, out))
        result.passed = not any(step.status == FAILED for step in result.steps)
    except Skipped as exc:
        result.skipped = str(exc)
        out(f"  {SKIP} skipped: {exc}")
    except (AssertionError, StepFailed, LabError, OSError, TimeoutError) as exc:
        if not result.steps or result.steps[-1].status != FAILED:  # outside a step (lab up/down)
            result.steps.append(Step("lab", passed=False, detail=str(exc)))
            out(f"  {FAIL} lab: {exc}")
    except Exception as exc:  # a bug in the scenario: say where, and still write the result
        result.steps.append(Step("scenario code", passed=False, detail=repr(exc)))
        out(f"  {FAIL} scenario code: {exc!r}\n{traceback.format_exc()}")
    result.seconds = time.monotonic() - started
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{scenario.name}.json"
    path.write_text(json.dumps(result.as_dict(), indent=2) + "\n")
    verdict = {PASSED: "passed", FAILED: "FAILED", SKIPPED: "skipped"}[result.status]
    if result.status == PASSED and result.count(SKIPPED):
        verdict += f" ({result.count(SKIPPED)} step(s) skipped)"
    where = result.backend or backend_name
    out(f"{scenario.name} on {where}: {verdict} in {result.seconds:.1f} s → {path}")
    return result


def verdict_of(result: Result) -> str:
    """The summary table's RESULT cell: passed, FAILED or skipped, with skipped steps counted."""
    if result.status == SKIPPED:
        return f"skipped ({result.skipped})"
    verdict = "FAILED" if result.status == FAILED else "passed"
    skipped = result.count(SKIPPED)
    return f"{verdict}, {skipped} skipped" if skipped else verdict


def summary_table(results: list[Result], scenarios: dict[str, Scenario]) -> str:
    header = ("SCENARIO", "BACKEND", "RESULT", "SECONDS", "KEY METRIC")
    rows = []
    for r in results:
        key = scenarios[r.scenario].key_metric
        metric = f"{key}={r.metrics[key]}" if key and key in r.metrics else ""
        verdict = verdict_of(r)
        rows.append((r.scenario, r.backend, verdict, f"{r.seconds:.1f}", metric))
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )


def write_junit(results: list[Result], path: Path) -> None:
    """A JUnit XML report (one testsuite per backend, one testcase per scenario), the format CI
    systems display; a failed step is the testcase's failure message, a skip its reason."""
    suites = ET.Element("testsuites")
    for backend in dict.fromkeys(r.backend for r in results):
        mine = [r for r in results if r.backend == backend]
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=f"scenarios.{backend}",
            tests=str(len(mine)),
            failures=str(sum(r.status == FAILED for r in mine)),
            skipped=str(sum(bool(r.skipped) for r in mine)),
            time=f"{sum(r.seconds for r in mine):.2f}",
        )
        for r in mine:
            case = ET.SubElement(
                suite, "testcase", classname=f"scenarios.{backend}", name=r.scenario,
                time=f"{r.seconds:.2f}",
            )  # fmt: skip
            if r.skipped:
                ET.SubElement(case, "skipped", message=r.skipped)
            elif r.status == FAILED:
                failed = [s for s in r.steps if s.status == FAILED]
                message = "; ".join(f"{s.name}: {s.detail}" for s in failed) or "failed"
                ET.SubElement(case, "failure", message=message).text = message
            lines = [f"{MARK[s.status]} {s.name} — {s.detail}" for s in r.steps]
            ET.SubElement(case, "system-out").text = "\n".join(lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)
