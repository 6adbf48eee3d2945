"""`vpnlab VERB`: the lab as one command, a verb for each thing to do with it.

Verbs: up, down, inspect, exec, shell, capture, impair, link,
graph, check, scenario, completion. `python -m lab` is the same command.

`up` leaves the lab running and writes .cache/lab/current.json (or $VPNLAB_STATE_DIR) so that
later commands — in other processes — find it. Data goes to stdout, progress and logs to
stderr. vpnlab's own errors (no lab up, no such node, a refused impairment) exit with status
125, as `docker run` does, so that a status passed through from a node's command (`exec`) or
a count of failed checks (`check`) is never mistaken for one. Each verb lives in its own module
here; this one assembles the parser.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from lab.cli import capture, check, completion, graph, inspect, lifecycle, network, nodes, scenario
from lab.model import LabError

ERROR_STATUS = 125
VERB_MODULES = (lifecycle, inspect, nodes, capture, network, graph, check, scenario, completion)

EXAMPLES = """examples:
  vpnlab up --backend netns --vpn --wait     # a lab, its tunnels up
  vpnlab inspect --json                      # nodes, addresses, tunnel state
  vpnlab exec client -- ip route
  vpnlab capture internet -w - | tcpdump -n -r -
  vpnlab impair client:internet --rate 10mbit --loss 2%
  vpnlab check checks/through-tunnel.yml
  vpnlab down
`vpnlab VERB --help` shows each verb's options and examples."""


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="vpnlab",
        description=__doc__.split("\n")[0] if __doc__ else None,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = top.add_subparsers(dest="verb", required=True, metavar="VERB")
    for module in VERB_MODULES:
        module.register(verbs)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (LabError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {message}", file=sys.stderr)
        return ERROR_STATUS
    except PermissionError as exc:  # the lab's records belong to root (make up runs as root)
        print(
            f"error: {exc.filename}: permission denied: run as root (sudo), or point "
            "VPNLAB_STATE_DIR at a directory of your own",
            file=sys.stderr,
        )
        return ERROR_STATUS
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): nothing more to say, and nothing to flush.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
