"""The undo stack of interface changes: each change pushes how to take it back, and closing
takes every one back, newest first, so a stopped VPN end leaves no stale route behind."""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vpn.errors import NetConfError
from vpn.iface.netlink import code_of, event, strerror

# What an undo may meet when someone (or the kernel, e.g. a tun closing) removed it first.
GONE = frozenset({errno.ENODEV, errno.ESRCH, errno.EADDRNOTAVAIL, errno.ENOENT})


@dataclass
class Undo:
    what: str
    action: Callable[[], None]
    key: tuple[Any, ...] | None = None


class UndoStack:
    def __init__(self) -> None:
        self._steps: list[Undo] = []

    def push(
        self, what: str, action: Callable[[], None], key: tuple[Any, ...] | None = None
    ) -> None:
        self._steps.append(Undo(what, action, key))

    def take(self, key: tuple[Any, ...]) -> Undo | None:
        """Remove and return the newest step pushed with `key` (to run it now), or None."""
        for i in range(len(self._steps) - 1, -1, -1):
            if self._steps[i].key == key:
                return self._steps.pop(i)
        return None

    def pending(self) -> list[str]:
        """What unwind() will undo, in the order it will do it."""
        return [u.what for u in reversed(self._steps)]

    def unwind(self, *, raise_errors: bool) -> None:
        """Run every step, newest first; a step whose target is gone already is no failure."""
        failures: list[str] = []
        while self._steps:
            step = self._steps.pop()
            try:
                step.action()
            except Exception as err:
                if code_of(err) in GONE:
                    event(logging.INFO, "netconf.undo", what=step.what, result="already gone")
                    continue
                event(logging.WARNING, "netconf.undo", what=step.what, error=strerror(err))
                failures.append(f"{step.what}: {strerror(err)}")
            else:
                event(logging.DEBUG, "netconf.undo", what=step.what, result="done")
        if failures and raise_errors:
            raise NetConfError(
                "could not undo: " + "; ".join(failures) + " — check with `ip addr`, `ip route` "
                "and sysctl, and remove what is left by hand"
            )
