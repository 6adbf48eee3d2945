"""The client's reconnect backoff, dead-peer detection by keepalive and the undo stack, on a
fake clock: each rule at its edge (first delay, cap, reset; the keepalive and dead-peer bounds;
newest first), so that a wrong constant or a wrong order fails here, not in a lab."""

from __future__ import annotations

import asyncio
import itertools
from types import SimpleNamespace
from typing import Any

import pytest

from vpn import protocol
from vpn.client import connection
from vpn.datapath import keepalive
from vpn.errors import Disconnected, NetConfError
from vpn.iface.undo import UndoStack


class Clock:
    """time.monotonic and asyncio.sleep for one module, advancing only when it sleeps."""

    def __init__(self, stop_after: int) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []
        self.stop_after = stop_after
        self.on_sleep: list[Any] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        if len(self.sleeps) >= self.stop_after:
            raise asyncio.CancelledError
        self.sleeps.append(seconds)
        self.now += seconds
        for hook in self.on_sleep:
            hook(self.now)


# -- reconnect backoff ---------------------------------------------------------------------------


def backoff(
    monkeypatch: pytest.MonkeyPatch, tries: int, *, low: float, high: float, up_for: float = 0.0
) -> tuple[list[float], list[tuple[float, float]]]:
    """The waits of a client whose every connection fails (after `up_for` seconds)."""
    clock = Clock(stop_after=tries)
    jitter: list[tuple[float, float]] = []

    def uniform(a: float, b: float) -> float:
        jitter.append((a, b))
        return 1.0

    monkeypatch.setattr(connection, "time", clock)
    monkeypatch.setattr(connection, "asyncio", SimpleNamespace(sleep=clock.sleep))
    monkeypatch.setattr(connection, "random", SimpleNamespace(uniform=uniform))
    client = connection.Client.__new__(connection.Client)
    client.config = SimpleNamespace(reconnect_min=low, reconnect_max=high)  # type: ignore[assignment]
    client.last_error, client.state, client.reconnects = "", "connecting", 0

    async def session() -> None:
        clock.now += up_for
        raise Disconnected("gateway went away")

    client.session = session  # type: ignore[method-assign]
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(client.reconnect_forever())
    assert client.reconnects == tries + 1 and client.state == "reconnecting"
    assert client.last_error == "gateway went away"
    return clock.sleeps, jitter


def test_backoff_starts_at_the_minimum_doubles_and_stops_at_the_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waits, jitter = backoff(monkeypatch, 7, low=0.5, high=4.0)
    assert waits == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    assert set(jitter) == {(0.8, 1.2)}  # ±20 % around each delay


def test_a_cap_that_is_not_a_power_of_two_of_the_minimum_is_still_the_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waits, _ = backoff(monkeypatch, 5, low=0.3, high=1.0)
    assert waits == pytest.approx([0.3, 0.6, 1.0, 1.0, 1.0])


def test_a_connection_that_lasted_starts_the_backoff_over(monkeypatch: pytest.MonkeyPatch) -> None:
    """Up for longer than twice the cap: the next try comes after the minimum again."""
    waits, _ = backoff(monkeypatch, 4, low=0.5, high=4.0, up_for=8.5)
    assert waits == [0.5, 0.5, 0.5, 0.5]
    waits, _ = backoff(monkeypatch, 4, low=0.5, high=4.0, up_for=7.5)  # not long enough
    assert waits == [0.5, 1.0, 2.0, 4.0]


# -- keepalive and dead-peer detection -----------------------------------------------------------


class Peer:
    """What keep_alive sees of a channel: its clocks, close and send_frame."""

    def __init__(self, now: float) -> None:
        self.last_rx = self.last_tx = now
        self.closed_at: float | None = None
        self.reason = ""
        self.sent: list[tuple[float, bytes]] = []
        self.clock_now = now

    def close(self, reason: str) -> None:
        self.closed_at, self.reason = self.clock_now, reason

    def send_frame(self, frame: bytes) -> None:
        self.sent.append((self.clock_now, frame))
        self.last_tx = self.clock_now


def run_keepalive(
    monkeypatch: pytest.MonkeyPatch, seconds: float, keep: float, dead: float
) -> tuple[Peer, Peer, float]:
    """Two peers for `seconds`: `silent` never sends, `talker` receives all the time."""
    clock = Clock(stop_after=10_000)
    silent, talker = Peer(clock.now), Peer(clock.now)
    start = clock.now

    def tick(now: float) -> None:
        for peer in (silent, talker):
            peer.clock_now = now
        talker.last_rx = now - 0.01  # something arrived just before this tick
        if now - start > seconds:
            clock.stop_after = 0

    clock.on_sleep.append(tick)
    monkeypatch.setattr(keepalive, "time", clock)
    monkeypatch.setattr(keepalive, "asyncio", SimpleNamespace(sleep=clock.sleep))

    def channels() -> list[Peer]:
        return [p for p in (silent, talker) if p.closed_at is None]

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(keepalive.keep_alive(channels, keep, dead, "nothing for a while"))  # type: ignore[arg-type]
    return silent, talker, start


def test_a_silent_peer_is_closed_just_after_dead_peer_seconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    silent, talker, start = run_keepalive(monkeypatch, 20, keep=2.0, dead=6.0)
    assert silent.closed_at is not None, "a peer silent for longer than dead_peer must be closed"
    assert 6.0 < silent.closed_at - start <= 7.0  # tick = 1 s
    assert silent.reason == "dead peer: nothing for a while"
    assert talker.closed_at is None, "a peer that is heard from is never closed"


def test_keepalives_go_out_after_keepalive_seconds_of_sending_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, talker, start = run_keepalive(monkeypatch, 10, keep=2.0, dead=6.0)
    times = [at - start for at, frame in talker.sent]
    assert all(frame == protocol.KEEPALIVE_FRAME for _, frame in talker.sent)
    assert times and 2.0 < times[0] <= 3.0
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps and all(2.0 < gap <= 3.0 for gap in gaps), times


def test_the_tick_is_half_a_short_keepalive(monkeypatch: pytest.MonkeyPatch) -> None:
    silent, _, start = run_keepalive(monkeypatch, 3, keep=0.4, dead=1.0)
    assert silent.closed_at is not None and 1.0 < silent.closed_at - start <= 1.2 + 1e-9


# -- the undo stack ------------------------------------------------------------------------------


def test_undo_runs_newest_first_and_pending_says_so() -> None:
    done: list[str] = []
    stack = UndoStack()
    for what in ("link up", "address", "route", "sysctl"):
        stack.push(f"undo {what}", lambda what=what: done.append(what))
    assert stack.pending() == ["undo sysctl", "undo route", "undo address", "undo link up"]
    stack.unwind(raise_errors=True)
    assert done == ["sysctl", "route", "address", "link up"]
    assert stack.pending() == []
    stack.unwind(raise_errors=True)  # nothing left: idempotent
    assert done == ["sysctl", "route", "address", "link up"]


def test_take_removes_the_newest_step_with_that_key() -> None:
    done: list[str] = []
    stack = UndoStack()
    stack.push("old", lambda: done.append("old"), key=("route", 1))
    stack.push("other", lambda: done.append("other"))
    stack.push("new", lambda: done.append("new"), key=("route", 1))
    taken = stack.take(("route", 1))
    assert taken is not None and taken.what == "new"
    assert stack.take(("route", 2)) is None
    assert stack.pending() == ["other", "old"]


def test_undo_goes_on_past_failures_and_reports_them_all() -> None:
    done: list[str] = []
    stack = UndoStack()

    def fails(what: str) -> Any:
        def action() -> None:
            done.append(what)
            raise OSError(1, "Operation not permitted")

        return action

    def gone() -> None:
        done.append("gone")
        raise OSError(19, "No such device")  # ENODEV: removed already, no failure

    stack.push("first", fails("first"))
    stack.push("gone", gone)
    stack.push("last", fails("last"))
    with pytest.raises(NetConfError) as err:
        stack.unwind(raise_errors=True)
    assert done == ["last", "gone", "first"]
    assert "last:" in str(err.value) and "first:" in str(err.value)
    assert "gone" not in str(err.value).split(" — ")[0]
    stack.push("again", fails("again"))
    stack.unwind(raise_errors=False)  # logged, not raised
