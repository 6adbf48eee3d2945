"""`vpnlab check FILE [--json]`: a check file's expectations against the running lab — a ✓/✗
line each, or JSON; the exit status is the number that failed (at most 100)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from lab import checks
from lab.checks.probes import Outcome, run
from lab.cli.common import current_backend, examples

MAX_STATUS = 100


def register(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = verbs.add_parser(
        "check",
        help="check a running lab against a YAML file of expectations",
        description=checks.__doc__,
        **examples(
            "vpnlab check checks/before-tunnel.yml",
            "vpnlab up --vpn --wait && vpnlab check checks/through-tunnel.yml --json",
        ),
    )
    check.add_argument("file", type=Path, metavar="FILE")
    check.add_argument("--json", action="store_true", help="JSON on stdout, no table")
    check.set_defaults(func=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    spec = checks.load(args.file)
    backend = current_backend()

    def show(outcome: Outcome) -> None:
        if not args.json:
            mark = "✓" if outcome.passed else "✗"
            print(
                f"  {mark} {outcome.check} — {outcome.detail} ({outcome.seconds:.1f} s)", flush=True
            )

    if not args.json:
        print(f"{spec.name} ({args.file}) on {backend.name}:")
    outcomes = run(backend, spec, show)
    failed = sum(not o.passed for o in outcomes)
    if args.json:
        document = {
            "file": str(args.file),
            "name": spec.name,
            "backend": backend.name,
            "passed": failed == 0,
            "failed": failed,
            "checks": [{**asdict(o), "seconds": round(o.seconds, 3)} for o in outcomes],
        }
        json.dump(document, sys.stdout, indent=2)
        print()
    else:
        print(f"{len(outcomes) - failed}/{len(outcomes)} passed")
    return min(failed, MAX_STATUS)
