"""`python -m scenarios NAME|all [--backend NAME ...] [--keep] [--junit FILE]`
(backend names: lab.backends.registry)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lab.backends.registry import BACKENDS
from scenarios import load, names
from scenarios.runner import FAILED, execute, summary_table, write_junit


def main(argv: list[str] | None = None) -> int:
    available = names()
    parser = argparse.ArgumentParser(prog="python -m scenarios", description="Run lab scenarios.")
    parser.add_argument(
        "name", choices=[*available, "all", "list"], help="a scenario, all of them, or list"
    )
    parser.add_argument(
        "--backend",
        action="append",
        choices=list(BACKENDS),
        help="lab backend (repeatable; default: docker if an engine answers, else netns)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="leave the lab up afterwards (make down)"
    )
    parser.add_argument("--junit", type=Path, metavar="FILE", help="also write a JUnit XML report")
    args = parser.parse_args(argv)
    wanted = available if args.name in ("all", "list") else [args.name]
    scenarios = {name: load(name) for name in wanted}
    if args.name == "list":
        for scenario in scenarios.values():
            print(f"{scenario.name:22} {scenario.description}")
        return 0
    chosen = list(scenarios.values())
    results = []
    for backend in args.backend or [None]:
        for scenario in chosen:
            results.append(
                execute(scenario, backend, keep=args.keep, out=lambda s: print(s, flush=True))
            )
    if args.junit:
        write_junit(results, args.junit)
    if len(results) > 1:
        print()
        print(summary_table(results, scenarios))
    return 0 if all(r.status != FAILED for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
