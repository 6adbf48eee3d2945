"""`vpnlab scenario list|run NAME`: the lab's scenarios (scenarios.runner), each on a fresh lab."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lab.backends.registry import BACKENDS
from lab.cli.common import add_place_option, apply_places, examples


def register(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    scenario = verbs.add_parser(
        "scenario",
        help="list or run the lab's scenarios (JSON, JUnit XML)",
        **examples(
            "vpnlab scenario list",
            "vpnlab scenario run basic --backend netns",
            "vpnlab scenario run all --junit results/junit.xml",
        ),
    )
    scenario.add_argument("action", choices=["list", "run"])
    scenario.add_argument("name", nargs="?", help="a scenario, or all")
    scenario.add_argument("--backend", action="append", choices=list(BACKENDS), help="repeatable")
    scenario.add_argument("--json", action="store_true", help="results as JSON on stdout")
    scenario.add_argument("--junit", type=Path, metavar="FILE", help="JUnit XML report")
    add_place_option(scenario)
    scenario.set_defaults(func=cmd_scenario)


def cmd_scenario(args: argparse.Namespace) -> int:
    from scenarios import load, names
    from scenarios.runner import FAILED, execute, summary_table, write_junit

    available = names()
    if args.action == "list":
        if args.json:
            rows = [{"name": n, "description": load(n).description} for n in available]
            json.dump(rows, sys.stdout, indent=2)
            print()
        else:
            for name in available:
                print(f"{name:22} {load(name).description}")
        return 0
    if args.name not in [*available, "all"]:
        print(
            f"error: scenario {args.name!r}; choose one of: all, {', '.join(available)}",
            file=sys.stderr,
        )
        return 2
    chosen = available if args.name == "all" else [args.name]
    apply_places(args.place)
    out = (lambda s: print(s, file=sys.stderr, flush=True)) if args.json else print
    results = [
        execute(load(name), backend, out=out)
        for backend in args.backend or [None]
        for name in chosen
    ]
    if len(results) > 1:
        table = summary_table(results, {name: load(name) for name in chosen})
        print(f"\n{table}", file=sys.stderr if args.json else sys.stdout)
    if args.json:
        json.dump([r.as_dict() for r in results], sys.stdout, indent=2)
        print()
    if args.junit:
        write_junit(results, args.junit)
    return 0 if all(r.status != FAILED for r in results) else 1
