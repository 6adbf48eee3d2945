"""Docker's firewall on the host: the DOCKER-USER rules that let routed traffic cross a lab
network as it would cross a switch, added at up and removed by their comment at down.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from collections.abc import Iterable

from lab.model import LabError


def accept_within_bridges(project: str, bridges: Iterable[str]) -> None:
    """Let routed traffic cross each lab network, as it would cross a switch.

    With br_netfilter the host's FORWARD chain also sees bridged frames, and Docker drops
    those of an internal network whose source or destination is outside its subnet: exactly
    the VPN pool's packets between gateway and LAN hosts. A rule in DOCKER-USER (which runs
    first) accepts what enters and leaves the same lab bridge; traffic between bridges
    (client → LAN without the tunnel) stays dropped. down() removes the rules by comment.
    The same goes for IPv6 where Docker keeps an ip6tables firewall too (its ip6tables option).
    """
    bridges = list(bridges)
    for iptables in filter(None, map(docker_iptables, FAMILIES)):
        for bridge in bridges:
            rule = ["-i", bridge, "-o", bridge, "-m", "comment", "--comment", project]
            done = subprocess.run(
                [iptables, "-I", "DOCKER-USER", *rule, "-j", "ACCEPT"],
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                raise LabError(
                    f"`{iptables} -I DOCKER-USER {shlex.join(rule)} -j ACCEPT` failed: "
                    f"{done.stderr.strip()}; without it Docker drops the VPN's routed packets "
                    "on the LAN (run as root)"
                )


def remove_accept_rules(project: str) -> None:
    """Remove the rules accept_within_bridges added for project."""
    for iptables in filter(None, map(docker_iptables, FAMILIES)):
        listing = subprocess.run([iptables, "-S", "DOCKER-USER"], capture_output=True, text=True)
        for line in listing.stdout.splitlines():
            words = shlex.split(line)
            if words[:2] != ["-A", "DOCKER-USER"] or f"--comment {project} " not in line + " ":
                continue
            done = subprocess.run([iptables, "-D", *words[1:]], capture_output=True, text=True)
            if done.returncode != 0:
                raise LabError(f"could not remove the rule `{line}`: {done.stderr.strip()}")


# The firewall commands of each family: Docker's rules are in one of each pair (nft or legacy).
FAMILIES = ("iptables", "ip6tables")


def docker_iptables(family: str = "iptables") -> str | None:
    """The iptables (nft or legacy) of family ("iptables" or "ip6tables") that holds Docker's
    DOCKER-USER chain, if any."""
    for name in (family, f"{family}-legacy"):
        path = shutil.which(name)
        if path is None:
            continue
        listing = subprocess.run([path, "-S", "DOCKER-USER"], capture_output=True, text=True)
        if listing.returncode == 0:
            return path
        if "Permission denied" in listing.stderr or "you must be root" in listing.stderr:
            raise LabError(
                f"`{name} -S DOCKER-USER` failed: {listing.stderr.strip()}; the Docker lab "
                "needs root on the host"
            )
    return None
