"""The pre-authentication limits as pure bookkeeping: pending caps (total, per source,
release on close) and the login backoff (threshold, growth, cap, reset, bounded size), on an
injected clock."""

from __future__ import annotations

import pytest

from vpn.config import ServerConfig
from vpn.errors import ConfigError
from vpn.server.admission import (
    AdmissionCounters,
    LoginThrottle,
    PendingLimits,
    RateLimit,
    Ticket,
    limits_from,
    throttled_reason,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_per_source_cap_refuses_only_that_source() -> None:
    limits = PendingLimits(max_total=100, max_per_source=2)
    a1, a2 = limits.acquire("10.0.0.1"), limits.acquire("10.0.0.1")
    assert isinstance(a1, Ticket) and isinstance(a2, Ticket)
    refused = limits.acquire("10.0.0.1")
    assert isinstance(refused, str) and "10.0.0.1" in refused and "per-source" in refused
    assert isinstance(limits.acquire("10.0.0.2"), Ticket)
    assert limits.counters.refused_per_source == 1 and limits.counters.refused_pending == 0
    assert limits.total == 3 and limits.by_source == {"10.0.0.1": 2, "10.0.0.2": 1}


def test_total_cap_refuses_every_source() -> None:
    limits = PendingLimits(max_total=3, max_per_source=2)
    held = [limits.acquire(f"10.0.0.{i}") for i in range(3)]
    assert all(isinstance(t, Ticket) for t in held)
    refused = limits.acquire("10.0.0.9")
    assert isinstance(refused, str) and "--max-pending" in refused
    assert limits.counters.refused_pending == 1


def test_release_frees_the_slot_once_and_calls_back() -> None:
    released: list[int] = []
    limits = PendingLimits(max_total=1, max_per_source=1, on_release=lambda: released.append(1))
    ticket = limits.acquire("10.0.0.1")
    assert isinstance(ticket, Ticket)
    assert isinstance(limits.acquire("10.0.0.1"), str)
    ticket.release()
    ticket.release()  # harmless: every exit path may release
    assert limits.total == 0 and limits.by_source == {} and released == [1]
    assert isinstance(limits.acquire("10.0.0.1"), Ticket)


def test_no_backoff_below_the_threshold() -> None:
    clock = Clock()
    throttle = LoginThrottle(threshold=3, base=2.0, cap=60.0, clock=clock)
    for _ in range(2):
        throttle.failed("alice", "10.0.0.1")
    assert throttle.wait("alice", "10.0.0.1") == 0.0


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    clock = Clock()
    throttle = LoginThrottle(threshold=3, base=2.0, cap=60.0, clock=clock)
    waits = []
    for _ in range(9):
        throttle.failed("alice", "10.0.0.1")
        waits.append(throttle.wait("alice", "10.0.0.1"))
    assert waits == [0.0, 0.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    clock.now += 59.5
    assert throttle.wait("alice", "10.0.0.1") == pytest.approx(0.5)
    clock.now += 0.5
    assert throttle.wait("alice", "10.0.0.1") == 0.0
    assert throttle.delay(10**6) == 60.0  # no overflow for a huge count


def test_backoff_is_per_user_and_per_source() -> None:
    clock = Clock()
    throttle = LoginThrottle(threshold=3, clock=clock)
    for _ in range(3):
        throttle.failed("alice", "10.0.0.1")
    assert throttle.wait("alice", "10.0.0.2") > 0, "the user name is throttled from anywhere"
    assert throttle.wait("bob", "10.0.0.1") > 0, "the address is throttled for every user"
    assert throttle.wait("bob", "10.0.0.2") == 0.0


def test_success_resets_the_user_but_not_the_source() -> None:
    clock = Clock()
    throttle = LoginThrottle(threshold=3, clock=clock)
    for _ in range(3):
        throttle.failed("alice", "10.0.0.1")
    throttle.succeeded("alice")
    assert throttle.wait("alice", "10.0.0.2") == 0.0
    assert throttle.wait("alice", "10.0.0.1") > 0, "a guesser's address stays throttled"


def test_old_failures_are_forgotten() -> None:
    clock = Clock()
    throttle = LoginThrottle(threshold=3, clock=clock, forget=900.0)
    for _ in range(5):
        throttle.failed("alice", "10.0.0.1")
    clock.now += 901
    assert throttle.wait("alice", "10.0.0.1") == 0.0
    throttle.failed("alice", "10.0.0.1")
    assert throttle.wait("alice", "10.0.0.1") == 0.0, "a fresh count starts at one"


def test_state_is_bounded_in_size() -> None:
    clock = Clock()
    throttle = LoginThrottle(threshold=1, max_entries=100, clock=clock)
    throttle.failed("alice", "10.0.0.1")
    for i in range(10_000):
        throttle.failed(f"user{i}", "10.9.9.9")
    assert len(throttle) <= 100
    assert throttle.wait("x", "10.9.9.9") > 0, "the sprayer's own address is still throttled"


def test_throttled_reason_says_whom_and_how_long() -> None:
    text = throttled_reason("alice", "10.0.0.1", 7.2)
    assert text == "too many failed logins for user 'alice' from 10.0.0.1: retry in 8 s"


def test_rate_limit_lets_one_line_through_per_interval() -> None:
    clock = Clock()
    limit = RateLimit(interval=10.0, clock=clock)
    assert limit.allow() == 0
    assert [limit.allow() for _ in range(1000)] == [None] * 1000
    clock.now += 10
    assert limit.allow() == 1000


def test_settings_build_the_limits_and_reject_nonsense() -> None:
    counters = AdmissionCounters()
    limits, throttle = limits_from(ServerConfig(), counters)
    assert (limits.max_total, limits.max_per_source) == (256, 16)
    assert (throttle.threshold, throttle.base, throttle.cap) == (3, 2.0, 60.0)
    assert limits.counters is counters
    with pytest.raises(ConfigError, match="--max-pending-per-source"):
        limits_from(ServerConfig(max_pending_per_source=0), counters)
    with pytest.raises(ConfigError, match="--login-backoff"):
        limits_from(ServerConfig(login_backoff=100.0), counters)
