"""python -m bench: throughput, latency and CPU cost of the VPN, plain routing and OpenVPN."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from bench import report
from bench.measure import BenchError
from bench.paths import PATHS
from bench.run import RESULTS, Settings, run
from lab.model import LabError


def parse_args(argv: list[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=(
            "iperf3 TCP both ways, ping idle and under load, and CPU per GB of the VPN "
            "processes, for each path in the lab (client → gateway → LAN host), repeated; "
            "medians are reported"
        ),
    )
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="length of each iperf3 run (default 10)"
    )
    parser.add_argument(
        "--paths",
        default=",".join(PATHS),
        help=f"comma-separated paths to measure (default {','.join(PATHS)})",
    )
    parser.add_argument(
        "--backend", default="netns", help="lab backend; only netns can be measured (default)"
    )
    parser.add_argument("--output", type=Path, default=RESULTS / "bench.json", help="results JSON")
    parser.add_argument(
        "--chart", type=Path, default=RESULTS / "bench.png", help="chart (PNG; '' for none)"
    )
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.seconds <= 0:
        parser.error("--repeat must be ≥ 1 and --seconds > 0")
    paths = tuple(p.strip() for p in args.paths.split(",") if p.strip())
    return Settings(
        repeat=args.repeat,
        seconds=args.seconds,
        paths=paths,
        output=args.output,
        chart=args.chart if str(args.chart) else None,
        backend=args.backend,
    )


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        results = run(settings, progress=lambda text: print(text, flush=True))
    except (BenchError, LabError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    print()
    print(report.table(results))
    print()
    print(report.ratio_lines(results))
    print()
    print(report.target_lines(results))
    if settings.output is not None:
        report.write_json(results, settings.output)
        print(f"\nresults: {settings.output}")
    if settings.chart is not None:
        try:
            report.chart(results, settings.chart)
            print(f"chart: {settings.chart}")
        except ImportError:
            print("chart skipped: matplotlib is missing (.venv/bin/pip install matplotlib)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
