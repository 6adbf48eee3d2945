"""The gateway's side of each client connection (`Session`) and the table that holds them.

A session knows its identity, its leased address and subnets, and its phase; it hands its DATA
to a `Forwarder` (the layer-3 router or the layer-2 switch) and its HELLO and goodbye to the
callbacks it was made with. It never sees the gateway itself, so nothing here imports it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from vpn import log, protocol
from vpn.datapath.channel import Channel
from vpn.errors import ProtocolError
from vpn.pool import RouteTable
from vpn.protocol import MsgType

DROP_LOG_INTERVAL = 5.0


class Forwarder(Protocol):
    """Where a session's packets go, and where the device's packets come from."""

    def from_session(self, session: Session, packets: list[memoryview]) -> None: ...

    def from_device(self) -> None: ...

    def forget(self, session: Session) -> None: ...


HelloHandler = Callable[["Session", protocol.Hello], Coroutine[Any, Any, None]]


class Session(Channel):
    """One connected client, from the end of its TLS handshake to its goodbye."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: ssl.SSLSocket,
        identity: str,
        peer: str,
        *,
        forwarder: Forwarder,
        offset: int,
        handshake_timeout: float,
        on_hello: HelloHandler,
        on_gone: Callable[[Session, str], None],
    ) -> None:
        super().__init__(loop, sock)
        self.identity = identity
        self.peer = peer
        self.phase = "hello"
        self.address: ipaddress.IPv4Address | None = None
        self.address_packed = b""
        self.address6: ipaddress.IPv6Address | None = None  # with --pool6
        self.address6_packed = b""
        self.subnets: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
        self.subnet_masks: tuple[tuple[int, int], ...] = ()  # the IPv4 subnets, as ints
        self.subnet6_masks: tuple[tuple[int, int], ...] = ()  # the IPv6 subnets, as ints
        self.dirty = False
        self.user = ""
        # The certificate this session logged in with: its identity is bound to it (a second
        # certificate for the same CN does not take the session over; revoking it ends it).
        self.serial = 0
        self.fingerprint = ""
        self.mac: bytes | None = None  # layer-2 mode: the one source MAC it may use
        self._last_drop_log = 0.0
        self.offset = offset
        self.forwarder = forwarder
        self._on_hello = on_hello
        self._on_gone = on_gone
        self._handshake_timeout = handshake_timeout
        self.deadline = loop.call_later(handshake_timeout, self._expire)

    def _expire(self) -> None:
        if self.phase != "data":
            self.close(f"no HELLO within {self._handshake_timeout:g} s")

    def on_control(self, kind: int, payload: memoryview) -> None:
        msg = protocol.check_order(protocol.SERVER_EXPECTS, self.phase, kind)
        if msg == MsgType.HELLO:
            self.phase = "auth"
            hello = protocol.decode_hello(payload)
            self.loop.create_task(self._on_hello(self, hello))
        elif msg == MsgType.BYE:
            reason, _ = protocol.decode_reason(payload)
            self.close(f"client said goodbye ({reason or 'no reason'})", send_error=False)
        # KEEPALIVE: last_rx is already updated by the read

    def on_packets(self, packets: list[memoryview]) -> None:
        if self.phase != "data":
            raise ProtocolError(f"DATA out of order: expected HELLO ({self.phase} phase)")
        self.forwarder.from_session(self, packets)

    def log_drop(self, what: str, source: bytes) -> None:
        now = time.monotonic()
        if now - self._last_drop_log < DROP_LOG_INTERVAL:
            return
        self._last_drop_log = now
        fields: dict[str, Any] = {"identity": self.identity, "why": what}
        if source:
            fields["source"] = str(ipaddress.ip_address(source))
        log.warn(
            "drop",
            **fields,
            **{k: v for k, v in self.counters.as_dict().items() if k.startswith("dropped")},
        )

    def on_closed(self, reason: str) -> None:
        self.deadline.cancel()
        self._on_gone(self, reason)

    def status(self) -> dict[str, Any]:
        return {
            "identity": self.identity,
            "user": self.user,
            "address": str(self.address) if self.address else "",
            "address6": str(self.address6) if self.address6 else "",
            "subnets": [str(s) for s in self.subnets],
            "peer": self.peer,
            "serial": format(self.serial, "x"),
            "fingerprint": self.fingerprint,
            "phase": self.phase,
            "connected_since": self.connected_at,
            **self.counters.as_dict(),
        }


class SessionTable:
    """The sessions of one gateway: logged in (by identity, with routes to their address and
    subnets) and still logging in (`pending`)."""

    def __init__(self) -> None:
        self.by_identity: dict[str, Session] = {}
        self.pending: set[Session] = set()
        self.routes: RouteTable[Session] = RouteTable()

    def __len__(self) -> int:
        return len(self.by_identity) + len(self.pending)

    def connected(self) -> list[Session]:
        return list(self.by_identity.values())

    def everyone(self) -> list[Session]:
        return self.connected() + list(self.pending)

    def add(self, session: Session, address: ipaddress.IPv4Address) -> None:
        """A session logged in with `address` (and its `address6`, if any): route those and its
        subnets to it."""
        self.pending.discard(session)
        self.by_identity[session.identity] = session
        self.routes.add_host(address, session)
        if session.address6 is not None:
            self.routes.add_host(session.address6, session)
        for subnet in session.subnets:
            self.routes.add_subnet(subnet, session)

    def remove(self, session: Session) -> bool:
        """Forget `session`; True if it was the logged-in one for its identity."""
        self.pending.discard(session)
        if self.by_identity.get(session.identity) is not session:
            return False
        del self.by_identity[session.identity]
        self.routes.remove_target(session)
        return True
