"""The listening socket's reader: accepts connections within the pre-authentication caps, and
pauses itself when the process runs out of file descriptors.

Why pause: the listener stays readable while connections wait in the kernel's backlog, so an
accept that fails with EMFILE would be retried at once, forever — 100 % CPU and a log line per
try. Instead the reader is removed and re-armed after `PAUSE` seconds, or as soon as a pending
connection goes (it freed a descriptor). Sessions already logged in are untouched throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import struct
from collections.abc import Callable

from vpn import log
from vpn.server.admission import PendingLimits, RateLimit, Ticket

PAUSE = 0.5  # seconds without accepting once descriptors ran out
BATCH = 64  # connections accepted per wake-up, so a flood cannot starve the sessions
_OUT_OF_FDS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close sends RST and leaves no TIME_WAIT

Admit = Callable[[socket.socket, str, Ticket], None]


class Acceptor:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        listener: socket.socket,
        limits: PendingLimits,
        admit: Admit,
    ) -> None:
        self.loop = loop
        self.listener = listener
        self.limits = limits
        self.admit = admit
        self.armed = False
        self.paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._log_refused = RateLimit()
        self._log_paused = RateLimit()
        self._log_failed = RateLimit()
        limits.on_release = self.resume

    def start(self) -> None:
        if not self.armed:
            self.loop.add_reader(self.listener.fileno(), self.on_readable)
            self.armed = True

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.armed:
            self.loop.remove_reader(self.listener.fileno())
            self.armed = False

    def resume(self) -> None:
        """Accept again (a descriptor may be free now); a no-op unless paused."""
        if self.paused:
            self.paused = False
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self.start()

    def _pause(self, exc: OSError) -> None:
        self.stop()
        self.paused = True
        self.limits.counters.accept_paused += 1
        self._timer = self.loop.call_later(PAUSE, self.resume)
        quiet = self._log_paused.allow()
        if quiet is not None:
            log.warn(
                "accept_paused",
                reason=f"{exc.strerror or exc}: out of file descriptors",
                pause=f"{PAUSE:g}s",
                pending=self.limits.total,
                times=self.limits.counters.accept_paused,
            )

    def on_readable(self) -> None:
        for _ in range(BATCH):
            try:
                conn, addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _OUT_OF_FDS:
                    self._pause(exc)
                elif self._log_failed.allow() is not None:
                    log.warn("accept_failed", error=str(exc))
                return
            source = unmapped(str(addr[0]))
            ticket = self.limits.acquire(source)
            if isinstance(ticket, str):
                self._refuse(conn, source, ticket)
                continue
            try:
                self.admit(conn, f"{source}:{addr[1]}", ticket)
            except BaseException:
                ticket.release()
                conn.close()
                raise

    def _refuse(self, conn: socket.socket, source: str, reason: str) -> None:
        """Over a cap: closed at once, before any TLS work; a log line now and then."""
        with contextlib.suppress(OSError):
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
        conn.close()
        quiet = self._log_refused.allow()
        if quiet is not None:
            counters = self.limits.counters
            log.warn(
                "refused_pending",
                peer=source,
                reason=reason,
                refused_pending=counters.refused_pending,
                refused_per_source=counters.refused_per_source,
            )


def unmapped(source: str) -> str:
    """An IPv4 peer of the dual-stack listener (::ffff:10.0.0.5) as the IPv4 address it is, so
    logs, limits and `vpn status` name it the same whichever socket took it."""
    if source.startswith("::ffff:") and "." in source:
        return source.removeprefix("::ffff:")
    return source
