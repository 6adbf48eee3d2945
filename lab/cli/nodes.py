"""`vpnlab exec NODE -- CMD…` (its exit status is vpnlab's) and `vpnlab shell NODE` (a shell on
the node, through the runtime's own tool so that a terminal works as usual)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys

from lab.cli.common import current_backend, examples
from lab.cli.inspect import object_name
from lab.model import LabError


def register(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    exec_ = verbs.add_parser(
        "exec",
        help="run a command on a node; its exit status is passed through",
        **examples(
            "vpnlab exec client -- ip route",
            "vpnlab exec gateway -- vpn status --json",
        ),
    )
    exec_.add_argument("node")
    exec_.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD ...")
    exec_.add_argument("--timeout", type=float, default=600.0, help="seconds (default 600)")
    exec_.set_defaults(func=cmd_exec)

    shell = verbs.add_parser(
        "shell",
        help="an interactive shell on a node",
        **examples("vpnlab shell gateway", "echo 'ip -br addr' | vpnlab shell client"),
    )
    shell.add_argument("node")
    shell.add_argument("--shell", default="bash", help="program to run (default bash)")
    shell.set_defaults(func=cmd_shell)


def cmd_exec(args: argparse.Namespace) -> int:
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise LabError("no command: vpnlab exec NODE -- CMD ARGS...")
    result = current_backend().exec(args.node, argv, timeout=args.timeout)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.returncode


def shell_argv(backend_name: str, object_name: str, program: str, tty: bool) -> list[str]:
    """The host command that opens `program` on a node."""
    if backend_name == "docker":
        return ["docker", "exec", "-it" if tty else "-i", object_name, program]
    return ["ip", "netns", "exec", object_name, program]


def cmd_shell(args: argparse.Namespace) -> int:
    backend = current_backend()
    argv = shell_argv(backend.name, object_name(backend, args.node), args.shell, sys.stdin.isatty())
    if shutil.which(argv[0]) is None:
        raise LabError(f"{argv[0]} is not installed on this host")
    sys.stdout.flush()
    os.execvp(argv[0], argv)  # the shell replaces vpnlab: its exit status is ours
