"""`make fuzz`: every fuzz target of tests/fuzz/target.py under atheris, `--runs` inputs in all
(split evenly), one worker; prints inputs and seconds per target and writes results/fuzz.json.
Exit status 1 if any target found an input that breaks a property (its output says which)."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TARGETS = ("frames", "hello", "config", "vnet")  # tests/fuzz/target.py (imports atheris)
DONE = re.compile(r"Done (\d+) runs in (\d+) second")


def fuzz(name: str, runs: int, max_len: int) -> dict[str, object]:
    argv = [sys.executable, "-m", "tests.fuzz.target", name, f"-runs={runs}"]
    argv += [f"-max_len={max_len}", "-print_final_stats=1"]  # one process: one worker
    argv.append(f"-artifact_prefix={REPO / 'results' / f'fuzz-{name}-'}")  # crash inputs
    started = time.monotonic()
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    found = DONE.search(done.stderr)
    result: dict[str, object] = {
        "inputs": int(found.group(1)) if found else 0,
        "seconds": round(seconds, 1),
        "crashed": done.returncode != 0,
    }
    if done.returncode != 0:
        result["output"] = done.stderr[-4000:]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.run", description=__doc__)
    parser.add_argument("--runs", type=int, default=1_000_000, help="inputs in all (1000000)")
    parser.add_argument("--max-len", type=int, default=4096, help="longest input in bytes")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "fuzz.json")
    args = parser.parse_args(argv)
    each = -(-args.runs // len(TARGETS))
    results = {}
    for name in TARGETS:
        results[name] = got = fuzz(name, each, args.max_len)
        verdict = "CRASHED" if got["crashed"] else "ok"
        print(f"  {name:7} {got['inputs']:>9} inputs  {got['seconds']:>6} s  {verdict}", flush=True)
        if got["crashed"]:
            print(got["output"], file=sys.stderr)
    total = sum(int(str(r["inputs"])) for r in results.values())
    seconds = round(sum(float(str(r["seconds"])) for r in results.values()), 1)
    crashed = [name for name, r in results.items() if r["crashed"]]
    print(f"fuzz: {total} inputs in {seconds} s, {len(crashed)} crashes {crashed or ''}".rstrip())
    args.out.parent.mkdir(exist_ok=True)
    summary = {"inputs": total, "seconds": seconds, "crashes": crashed, "targets": results}
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    return 1 if crashed or total < args.runs else 0


if __name__ == "__main__":
    sys.exit(main())
