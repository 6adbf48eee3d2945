"""python -m lab.backends.swarm up|down|status: the two-engine test swarm (`make swarm-up`)."""

from __future__ import annotations

import argparse
import sys

from lab.backends.swarm import cluster
from lab.model import LabError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.backends.swarm", description=__doc__)
    parser.add_argument("verb", choices=("up", "down", "status"))
    args = parser.parse_args(argv)
    say = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    try:
        if args.verb == "up":
            cluster.up(say)
        elif args.verb == "down":
            cluster.down(say)
        else:
            found = cluster.engines()
            if found is None:
                print("no swarm made by `make swarm-up`")
                return 1
            for name, url in found.items():
                print(f"{name}\t{url}\t{cluster.swarm_state(url) or 'not answering'}")
    except LabError as exc:
        print(f"swarm {args.verb}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
