"""Who owns a Docker lab: the label that tells a killed run's orphan from a lab in use or kept."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from lab.backends.docker.engine import KEPT, lab_owner, owner, owner_alive, owner_gone


def _ended_process_owner() -> str:
    process = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                               stdin=subprocess.PIPE)  # fmt: skip
    name = owner(process.pid)
    process.communicate(timeout=30)
    assert name is not None
    return name


def test_this_process_owns_its_lab_and_is_alive() -> None:
    mine = lab_owner(kept=False)
    assert mine == owner(os.getpid())
    assert mine.split("/")[:2] == [socket.gethostname(), str(os.getpid())]
    assert owner_alive(mine) and not owner_gone(mine)


def test_an_ended_process_is_gone_and_its_pid_reused_still_counts_as_gone() -> None:
    ended = _ended_process_owner()
    assert owner_gone(ended) and not owner_alive(ended)
    host, mine, started = (owner(os.getpid()) or "").split("/")
    # This pid with another start time is another process: that lab's owner is gone.
    assert owner_gone(f"{host}/{mine}/{int(started) + 1}")
    assert not owner_gone(f"{host}/{mine}/{started}")


def test_kept_unlabelled_and_other_hosts_labs_are_never_orphans() -> None:
    assert lab_owner(kept=True) == KEPT
    ended = _ended_process_owner()
    _, pid, started = ended.split("/")
    for name in (KEPT, "", f"{socket.gethostname()}-other/{pid}/{started}",
                 f"{socket.gethostname()}/{pid}", f"{socket.gethostname()}/x/{started}",
                 f"{socket.gethostname()}/{pid}/x"):  # fmt: skip
        assert not owner_gone(name), name
