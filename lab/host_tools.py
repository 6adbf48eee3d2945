"""The host tools a lab runs (tcpdump, iperf3, ping, iptables, ip), brought in when missing.

`scripts/deps.sh` is the one list and the one installer, for make and for `vpnlab up` alike: a
second call finds everything present and prints nothing. Engines are not started here — a
stopped Docker engine is the backend's preflight to report, in one line.
"""

from __future__ import annotations

import os
import subprocess
import sys

from lab.model import LabError
from lab.model.records import REPO_ROOT

DEPS = REPO_ROOT / "scripts" / "deps.sh"


def ensure() -> None:
    """Install what is missing (root and apt; deps.sh says what it does on stderr)."""
    if not DEPS.is_file():  # an installed package without the repository: nothing to run
        return
    done = subprocess.run(["bash", str(DEPS)], capture_output=True, text=True, env=os.environ)
    if done.stdout:  # what it installed: progress, so stderr (stdout is a verb's data)
        print(done.stdout, end="", file=sys.stderr)
    if done.returncode != 0:
        raise LabError(
            done.stderr.strip().splitlines()[-1]
            if done.stderr.strip()
            else f"{DEPS} failed with status {done.returncode}"
        )
