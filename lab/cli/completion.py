"""`vpnlab completion bash`: a bash completion script made from the parser itself, so it can
never offer a verb or option that does not exist. Node and network names come from the compose
files (`vpnlab _names`), read when completing, so a new node completes without regenerating."""

from __future__ import annotations

import argparse
import os
import sys

from lab.cli.common import examples
from lab.model.compose import default_files, load
from lab.model.records import REPO_ROOT

SCRIPT = """# bash completion for vpnlab — eval "$(vpnlab completion bash)"
_vpnlab() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} verb=${{COMP_WORDS[1]}}
    if [[ $COMP_CWORD -eq 1 ]]; then
        COMPREPLY=($(compgen -W "{verbs}" -- "$cur")); return
    fi
    case $verb in
{cases}
    esac
    if [[ $cur == -* ]]; then COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    else COMPREPLY=($(compgen -W "$(vpnlab _names 2>/dev/null)" -- "$cur")); fi
}}
complete -o default -F _vpnlab vpnlab
"""


def register(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    completion = verbs.add_parser(
        "completion",
        help="print a shell completion script",
        **examples('eval "$(vpnlab completion bash)"   # in ~/.bashrc'),
    )
    completion.add_argument("shell", choices=["bash"])
    completion.set_defaults(func=cmd_completion)
    names = verbs.add_parser("_names")  # for the script: nodes, NODE:NETWORK links, networks
    names.set_defaults(func=cmd_names)


def bash_script(parser: argparse.ArgumentParser) -> str:
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    verbs = {name: sub for name, sub in subparsers.choices.items() if not name.startswith("_")}
    cases = []
    for name, sub in verbs.items():
        options = [s for a in sub._actions for s in a.option_strings]
        choices = [c for a in sub._actions if a.choices and not a.option_strings for c in a.choices]
        cases.append(
            f'        {name}) opts="{" ".join(options)}"; words="{" ".join(map(str, choices))}";;'
        )
    script = SCRIPT.format(verbs=" ".join(verbs), cases="\n".join(cases))
    return script.replace(
        'else COMPREPLY=($(compgen -W "$(vpnlab',
        'else COMPREPLY=($(compgen -W "$words $(vpnlab',
    )


def cmd_completion(args: argparse.Namespace) -> int:
    from lab.cli import parser

    sys.stdout.write(bash_script(parser()))
    return 0


def cmd_names(args: argparse.Namespace) -> int:
    topology = load(default_files(REPO_ROOT), os.environ)
    words = [*topology.nodes, *topology.networks]
    words += [f"{n.name}:{net}" for n in topology.nodes.values() for net in n.networks]
    print(" ".join(words))
    return 0
