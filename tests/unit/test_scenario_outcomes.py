"""Scenario results have three outcomes — passed, failed, skipped with a reason — and a skipped
step is never counted as passed: not in the JSON, the summary table, JUnit or `verify`."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from scenarios import impairment
from scenarios.runner import Context, Result, Scenario, Step, summary_table, write_junit


def test_a_skipped_step_is_neither_passed_nor_failed(tmp_path: Path) -> None:
    """Three outcomes: a step the machine cannot do is skipped with its reason — its scenario
    still passes, but the step never counts as passed, in the JSON, the table or JUnit."""
    skipped = Step("delay", False, "no netem", 0.0, "skipped")
    steps = [Step("rate limit", True, "9.8 Mbit/s"), skipped]
    result = Result("impairment", "netns", True, steps, seconds=3.0)
    assert [s.status for s in steps] == ["passed", "skipped"]
    assert not steps[1].passed
    assert result.status == "passed" and result.count("skipped") == 1
    saved = result.as_dict()
    assert [s["status"] for s in saved["steps"]] == ["passed", "skipped"]
    assert saved["steps"][1]["passed"] is False and saved["status"] == "passed"
    scenarios = {"impairment": Scenario("impairment", "", lambda ctx: None)}
    assert "passed, 1 skipped" in summary_table([result], scenarios)
    path = tmp_path / "junit.xml"
    write_junit([result], path)
    case = ET.parse(path).getroot().find("testsuite/testcase[@name='impairment']")
    assert case is not None and case.find("failure") is None
    assert "- delay — no netem" in (case.findtext("system-out") or "")


def test_a_failed_step_fails_the_scenario_even_after_a_skip() -> None:
    steps = [Step("delay", False, "no netem", status="skipped"), Step("ping", False, "lost")]
    result = Result("impairment", "netns", True, steps)
    assert result.status == "failed"
    assert Result("tap", "docker", False, skipped="no tap").status == "skipped"


def test_skip_step_records_a_skip_not_a_pass() -> None:
    from scenarios.lab_faults import skip_step

    result = Result("impairment", "netns", False)
    lines: list[str] = []
    ctx = Context.__new__(Context)
    ctx.result, ctx.out = result, lines.append
    skip_step(ctx, "delay 100 ms (netem)", "no sch_netem")
    (step,) = result.steps
    assert step.status == "skipped" and not step.passed
    assert lines == ["  - delay 100 ms (netem) — skipped: no sch_netem"]


IMPAIRED = {"rate_limited_mbit": 9.5, "rate_limit_mbit": 10, "link_packets_dropped": 4,
            "ping_loss_percent": 10}  # fmt: skip


def test_impairment_verify_accepts_a_delay_measured_or_truly_skipped() -> None:
    measured = Result("impairment", "netns", True, [Step("delay", True, "rtt 101 ms")])
    measured.metrics = {**IMPAIRED, "netem": "rtt 101.2 ms"}
    impairment.verify(measured)
    skipped = Result("impairment", "netns", True, [Step("delay", False, "no", status="skipped")])
    skipped.metrics = {**IMPAIRED, "netem": "skipped: no sch_netem"}
    impairment.verify(skipped)


@pytest.mark.parametrize(
    ("netem", "status"),
    [("rtt 3.0 ms", "passed"), ("skipped: no sch_netem", "passed"), ("", "passed")],
)
def test_impairment_verify_refuses_a_delay_that_did_not_happen(netem: str, status: str) -> None:
    """A delay step whose RTT is below the delay, or a 'skipped' metric whose step is recorded
    as passed, is a failure: `verify` must check the value, not that the key exists."""
    result = Result("impairment", "netns", True, [Step("delay", status == "passed", "x")])
    result.metrics = {**IMPAIRED, "netem": netem}
    with pytest.raises(AssertionError):
        impairment.verify(result)
