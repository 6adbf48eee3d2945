"""Who a session is: an identity (the certificate's CN) bound to one certificate.

The CN alone is not enough to decide who may hold a tunnel: a CA can issue any number of
certificates with one CN (a re-issue, a second device, a mistake), and whoever holds any of
them would otherwise take over the live session and its address. The rule, also in
docs/protocol.md:

- a new connection with the SAME certificate (SHA-256 fingerprint) as the live session of its
  identity replaces it — a client reconnecting after a network change or a gateway restart;
- a connection with a DIFFERENT certificate for an identity that has a live session is refused
  (retry=false) and the live session keeps its tunnel and address;
- a session whose certificate is revoked ends, with the reason, when the gateway loads the CRL
  that lists it; `vpn kill NAME` ends one on request.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from typing import Any

from vpn import log
from vpn.credentials import tls
from vpn.datapath.sessions import Session, SessionTable
from vpn.errors import ControlError, TlsError
from vpn.protocol import MsgType


def revoked_reason(serial: int) -> str:
    return f"certificate revoked (serial {serial:x})"


def bind(table: SessionTable, session: Session, revoked: frozenset[int]) -> str | None:
    """Bind `session` to its certificate and apply the identity rule (at HELLO, before a lease).

    Returns the reason to refuse it, or None when it may log in; a live session with the same
    certificate is closed here (replaced). Runs synchronously up to the lease, so two
    connections cannot both pass it for one identity.
    """
    try:
        session.serial, session.fingerprint = tls.peer_certificate(session.sock)
    except (OSError, ValueError, ssl.SSLError, TlsError) as exc:
        return f"cannot read the client certificate: {exc}"
    if session.serial in revoked:  # revoked while its handshake (with the older CRL) ran
        return revoked_reason(session.serial)
    previous = table.by_identity.get(session.identity)
    if previous is None or previous.closed:
        return None
    if previous.fingerprint != session.fingerprint:
        log.warn(
            "identity_conflict",
            identity=session.identity,
            peer=session.peer,
            serial=format(session.serial, "x"),
            live_peer=previous.peer,
            live_serial=format(previous.serial, "x"),
        )
        return (
            f"identity {session.identity} is connected with another certificate "
            f"(serial {previous.serial:x})"
        )
    previous.close(f"replaced by a new connection from {session.peer}", kind=MsgType.BYE)
    return None


def end_revoked(sessions: Iterable[Session], revoked: frozenset[int]) -> int:
    """Close every session whose certificate is in `revoked`; return how many."""
    ended = 0
    for session in sessions:
        if session.serial and session.serial in revoked and not session.closed:
            reason = revoked_reason(session.serial)
            log.warn("revoked", identity=session.identity, peer=session.peer, reason=reason)
            session.close(reason, retry=False)
            ended += 1
    return ended


def kill(table: SessionTable, request: dict[str, Any]) -> dict[str, Any]:
    """The control request {"cmd": "kill", "identity": NAME}: end NAME's session for good
    (retry=false: its client stops instead of coming straight back)."""
    name = request.get("identity")
    if not isinstance(name, str) or not name:
        raise ControlError('kill needs {"cmd": "kill", "identity": NAME}')
    session = table.by_identity.get(name)
    if session is None:
        connected = ", ".join(sorted(table.by_identity)) or "none"
        raise ControlError(f"no session for identity {name!r} (connected: {connected})")
    address = str(session.address or "")
    log.event("killed", identity=name, peer=session.peer, serial=format(session.serial, "x"))
    session.close("session ended by the gateway's administrator (vpn kill)", retry=False)
    return {"ok": True, "killed": name, "address": address, "peer": session.peer}
