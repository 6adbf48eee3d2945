"""lab/model/records.py: the run records any later process finds a lab by, in a state
directory of the test's own (VPNLAB_STATE_DIR)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lab.model import LabError, records


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "state"
    monkeypatch.setenv("VPNLAB_STATE_DIR", str(directory))
    return directory


def run(state: Path, run_id: str) -> records.Record:
    return records.new_record("netns", run_id, state / run_id, [Path("compose/lab.yml")])


def test_state_dir_from_the_environment_or_the_repository(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert records.state_dir() == state
    monkeypatch.setenv("VPNLAB_STATE_DIR", "")
    assert records.state_dir() == records.REPO_ROOT / ".cache" / "lab"
    monkeypatch.delenv("VPNLAB_STATE_DIR")
    assert records.state_dir() == records.REPO_ROOT / ".cache" / "lab"


def test_a_new_record_is_written_before_anything_exists(state: Path) -> None:
    record = run(state, "abc123")
    assert set(record) == {"backend", "run_id", "workdir", "files", "created"}
    assert (record["backend"], record["run_id"]) == ("netns", "abc123")
    assert record["workdir"] == str(state / "abc123") and record["files"] == ["compose/lab.yml"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}", record["created"])
    path = state / "abc123" / "lab.json"
    assert json.loads(path.read_text()) == record
    assert path.read_text().endswith("}\n") and '\n "backend"' in path.read_text()  # indent=1
    assert not path.with_suffix(".tmp").exists()


def test_read_json_missing_or_broken(tmp_path: Path) -> None:
    assert records.read_json(tmp_path / "none.json") is None
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(LabError, match=rf"^{re.escape(str(bad))} is not valid JSON \(.*\): fix$"):
        records.read_json(bad, "fix")
    with pytest.raises(LabError, match=r"remove it by hand$"):
        records.read_json(bad)


def test_all_records_oldest_run_id_first_and_skips_empty(state: Path) -> None:
    assert records.all_records() == []
    b, a = run(state, "bbb"), run(state, "aaa")
    (state / "ccc").mkdir()
    (state / "ccc" / "lab.json").write_text("{}")  # an empty record is no lab
    assert records.all_records() == [a, b]


def test_current_record_needs_its_own_record_too(state: Path) -> None:
    assert records.current_record() is None
    with pytest.raises(LabError, match=r"no lab is up \(no record in .*state\): start one"):
        records.require_current()
    record = run(state, "r1")
    records.make_current(record)
    assert json.loads((state / "current.json").read_text()) == record
    assert records.current_record() == record == records.require_current()
    (state / "r1" / "lab.json").unlink()
    assert records.current_record() is None


def test_forget_removes_the_record_and_current_only_if_it_names_that_lab(state: Path) -> None:
    one, two = run(state, "one"), run(state, "two")
    records.make_current(two)
    records.forget(one)
    assert not (state / "one" / "lab.json").exists()
    assert (state / "current.json").exists() and records.current_record() == two
    records.forget(two)
    assert not (state / "current.json").exists() and not (state / "two" / "lab.json").exists()
    records.forget(two)  # again: nothing left, no error
