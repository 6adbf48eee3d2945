"""Turn mutmut's results (mutants/**/*.py.meta, written by `mutmut run`) into
results/mutation.json: per module killed, survived, timeout, no_tests and total; the score over
all modules; and every survivor that tests/mutation-equivalents.txt does not explain.

A mutant that no test reaches ("no tests") counts as not killed. An equivalent mutant — one no
test can tell from the original — is listed with its reason in tests/mutation-equivalents.txt
(`MUTANT_NAME  reason`) and counted apart, not as killed. Exit status 1 when a module scores
below --module-min or the whole below --total-min.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# mutmut 3's exit codes of a mutant's test run (mutmut/stats.py): 1 and 3 kill it, 0 survives.
KILLED, SURVIVED = {1, 3}, {0}
TIMEOUT = {-24, 24, 152, 255, 36}
NO_TESTS = {5, 33}


def equivalents(path: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                name, _, reason = line.partition(" ")
                found[name] = reason.strip()
    return found


def module_of(meta: Path, mutants: Path) -> str:
    return str(meta.relative_to(mutants))[: -len(".meta")]


def metas(runs: list[Path]) -> dict[str, Path]:
    """Each module's .meta file; a module in several runs' directories: the last run's."""
    found: dict[str, Path] = {}
    for mutants in runs:
        for meta in sorted(mutants.rglob("*.py.meta")):
            if json.loads(meta.read_text())["exit_code_by_key"]:
                found[module_of(meta, mutants)] = meta
    return found


def report(runs: list[Path], equivalent: dict[str, str]) -> dict[str, object]:
    modules: dict[str, dict[str, int]] = {}
    survivors: list[dict[str, str]] = []
    explained: list[dict[str, str]] = []
    for name, meta in sorted(metas(runs).items()):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        counts = dict.fromkeys(("killed", "survived", "timeout", "no_tests", "other"), 0)
        counts["not_checked"] = 0
        counts["equivalent"] = 0
        for mutant, code in codes.items():
            if code in KILLED:
                counts["killed"] += 1
            elif mutant in equivalent and (code in SURVIVED or code in NO_TESTS):
                counts["equivalent"] += 1
                explained.append({"mutant": mutant, "module": name, "reason": equivalent[mutant]})
            elif code is None:  # the run was stopped before this mutant
                counts["not_checked"] += 1
            elif code in SURVIVED:
                counts["survived"] += 1
                survivors.append({"mutant": mutant, "module": name, "status": "survived"})
            elif code in TIMEOUT:
                counts["timeout"] += 1  # the mutant hung the tests: caught, as a kill
            elif code in NO_TESTS:
                counts["no_tests"] += 1
                survivors.append({"mutant": mutant, "module": name, "status": "no tests"})
            else:
                counts["other"] += 1
                survivors.append({"mutant": mutant, "module": name, "status": f"exit {code}"})
        counts["total"] = len(codes)
        counts["score_percent"] = _score(counts)  # type: ignore[assignment]
        modules[name] = counts
    total = {k: sum(m[k] for m in modules.values()) for k in ("killed", "timeout", "total")}
    for key in ("equivalent", "not_checked"):
        total[key] = sum(m[key] for m in modules.values())
    return {
        "modules": modules,
        "overall": {**total, "score_percent": _score(total)},
        "survivors": survivors,
        "equivalents": explained,
    }


def _score(counts: dict[str, int]) -> float:
    """Killed (timeouts included) over all checked mutants but the proven-equivalent ones."""
    judged = counts["total"] - counts["equivalent"] - counts["not_checked"]
    return round(100 * (counts["killed"] + counts["timeout"]) / judged, 1) if judged else 100.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--mutants",
        type=Path,
        action="append",
        help="mutmut's mutants/ directory (repeatable: a later run's modules win)",
    )
    parser.add_argument(
        "--equivalents", type=Path, default=REPO / "tests" / "mutation-equivalents.txt"
    )
    parser.add_argument("--out", type=Path, default=REPO / "results" / "mutation.json")
    parser.add_argument("--module-min", type=float, default=80.0)
    parser.add_argument("--total-min", type=float, default=90.0)
    args = parser.parse_args(argv)
    data = report(args.mutants or [REPO / "mutants"], equivalents(args.equivalents))
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2) + "\n")
    modules: dict[str, dict[str, float]] = data["modules"]  # type: ignore[assignment]
    for name, m in modules.items():
        print(
            f"  {name:34} {m['score_percent']:5.1f} %  killed {m['killed'] + m['timeout']:4}"
            f"  survived {m['survived']:3}  no tests {m['no_tests']:3}"
            f"  equivalent {m['equivalent']:2}  total {m['total']:4}"
        )
    overall: dict[str, float] = data["overall"]  # type: ignore[assignment]
    print(f"mutation score {overall['score_percent']} % over {overall['total']} mutants")
    if overall["not_checked"]:
        print(f"  {overall['not_checked']} mutants not checked yet (an interrupted run)")
    print(f"→ {args.out}")
    low = [n for n, m in modules.items() if m["score_percent"] < args.module_min]
    if low or overall["score_percent"] < args.total_min:
        print(f"below target (module < {args.module_min} %: {low or 'none'})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
