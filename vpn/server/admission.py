"""Limits before authentication, as pure bookkeeping: no sockets, the clock is injected.

Anyone on the internet can open TCP connections to the gateway and send password guesses; none
of that may cost the gateway without bound. `PendingLimits` caps the connections that have not
logged in yet (in total and per source address), `LoginThrottle` backs off password guessing
per user name and per source, and `RateLimit` keeps the log of a flood to a few lines. The
gateway (`vpn.server.gateway`, `vpn.server.acceptor`) calls them at a handful of points; the
packet path never does.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from vpn.config import ServerConfig
from vpn.errors import ConfigError

Clock = Callable[[], float]


@dataclass
class AdmissionCounters:
    """What `vpn status` reports under "admission"."""

    refused_pending: int = 0  # over --max-pending: closed at accept, no TLS work
    refused_per_source: int = 0  # over --max-pending-per-source
    accept_paused: int = 0  # times the listener was paused (out of file descriptors)
    auth_refused: int = 0  # wrong user name or password (scrypt ran)
    auth_throttled: int = 0  # refused before the password check: too many recent failures

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class Ticket:
    """One admitted, not yet authenticated connection; `release` once it logs in or goes.

    Releasing twice is harmless, so every exit path of a connection may call it."""

    __slots__ = ("_limits", "released", "source")

    def __init__(self, limits: PendingLimits, source: str) -> None:
        self._limits = limits
        self.source = source
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._limits._release(self.source)


class PendingLimits:
    """Caps on unauthenticated connections: `max_total` at once, `max_per_source` from one
    address. Each open TCP connection costs a file descriptor, buffers and, during the
    handshake, CPU; without a cap a single host can exhaust all of them."""

    def __init__(
        self,
        max_total: int,
        max_per_source: int,
        counters: AdmissionCounters | None = None,
        on_release: Callable[[], None] | None = None,
    ) -> None:
        self.max_total = max_total
        self.max_per_source = max_per_source
        self.counters = counters if counters is not None else AdmissionCounters()
        self.on_release = on_release
        self.total = 0
        self.by_source: dict[str, int] = {}

    def acquire(self, source: str) -> Ticket | str:
        """A Ticket, or the reason this connection is over a cap (and counted)."""
        if self.total >= self.max_total:
            self.counters.refused_pending += 1
            return f"{self.total} unauthenticated connections already (--max-pending)"
        held = self.by_source.get(source, 0)
        if held >= self.max_per_source:
            self.counters.refused_per_source += 1
            return (
                f"{held} unauthenticated connections from {source} already "
                "(--max-pending-per-source)"
            )
        self.total += 1
        self.by_source[source] = held + 1
        return Ticket(self, source)

    def _release(self, source: str) -> None:
        self.total -= 1
        held = self.by_source.get(source, 0) - 1
        if held > 0:
            self.by_source[source] = held
        else:
            self.by_source.pop(source, None)  # the table holds only sources with connections
        if self.on_release is not None:
            self.on_release()


@dataclass
class _Failures:
    count: int = 0
    last: float = 0.0


@dataclass
class LoginThrottle:
    """Exponential backoff for password guessing, per user name and per source address.

    After `threshold` failures for a key, the next attempt must wait `base` seconds after the
    last failure, doubling with each further failure up to `cap`. A throttled attempt is
    refused before the password is checked: scrypt's cost is what a guesser wants to spend
    on us. A success clears the user's entry (not the source's: a guesser holding one valid
    account must not reset its address's count with it). Entries unused for `forget` seconds
    count as clean, and at most `max_entries` are kept (least recently failed go first), so
    a spray of user names cannot grow the table without bound.
    """

    threshold: int = 3
    base: float = 2.0
    cap: float = 60.0
    max_entries: int = 4096
    forget: float = 900.0
    clock: Clock = time.monotonic
    _entries: OrderedDict[tuple[str, str], _Failures] = field(default_factory=OrderedDict)

    def __len__(self) -> int:
        return len(self._entries)

    def delay(self, failures: int) -> float:
        """Seconds an attempt must wait after the last of `failures` failures."""
        if failures < self.threshold:
            return 0.0
        return min(self.base * 2.0 ** min(failures - self.threshold, 64), self.cap)

    def _wait(self, key: tuple[str, str], now: float) -> float:
        entry = self._entries.get(key)
        if entry is None:
            return 0.0
        if now - entry.last > self.forget:
            del self._entries[key]
            return 0.0
        return max(0.0, entry.last + self.delay(entry.count) - now)

    def wait(self, user: str, source: str) -> float:
        """Seconds until `user` may try again from `source`; 0.0: check the password now."""
        now = self.clock()
        return max(self._wait(("user", user), now), self._wait(("source", source), now))

    def failed(self, user: str, source: str) -> None:
        now = self.clock()
        for key in (("user", user), ("source", source)):
            entry = self._entries.pop(key, None)
            if entry is None or now - entry.last > self.forget:
                entry = _Failures()
            entry.count += 1
            entry.last = now
            self._entries[key] = entry  # most recent at the end
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def succeeded(self, user: str) -> None:
        self._entries.pop(("user", user), None)


@dataclass
class RateLimit:
    """At most one log line per `interval` seconds for one kind of event; `allow` returns
    None (stay quiet) or how many events were kept quiet since the last line."""

    interval: float = 10.0
    clock: Clock = time.monotonic
    _last: float = field(default=float("-inf"))
    _quiet: int = 0

    def allow(self) -> int | None:
        now = self.clock()
        if now - self._last < self.interval:
            self._quiet += 1
            return None
        self._last = now
        quiet, self._quiet = self._quiet, 0
        return quiet


def throttled_reason(user: str, source: str, wait: float) -> str:
    """What a throttled client is told (and the log says): whom, from where, how long."""
    return f"too many failed logins for user {user!r} from {source}: retry in {math.ceil(wait)} s"


def limits_from(
    config: ServerConfig, counters: AdmissionCounters
) -> tuple[PendingLimits, LoginThrottle]:
    """The gateway's limits from its settings; a ConfigError names a value that cannot work."""
    for name in ("max_pending", "max_pending_per_source", "login_failures"):
        if getattr(config, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
    if not 0 < config.login_backoff <= config.login_backoff_max:
        raise ConfigError("--login-backoff must be above 0 and at most --login-backoff-max")
    limits = PendingLimits(config.max_pending, config.max_pending_per_source, counters)
    throttle = LoginThrottle(
        threshold=config.login_failures, base=config.login_backoff, cap=config.login_backoff_max
    )
    return limits, throttle
