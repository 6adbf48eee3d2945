"""Live reload (SIGHUP, `vpn reload`): the CRL as before, and the settings file read again.

What can change under running clients changes: pushed routes and name servers reach every
connected client as a CONFIG update, without a reconnect; the log level and the metrics' label
cap take effect at once. Everything else (pool, listen, tun, mtu, ...) would need a new device
or socket: those settings are named in the log and keep their running values until a restart.
A file that does not load (a typo, a bad route) leaves the running settings as they were.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from vpn import log
from vpn.config import ServerConfig, parse_pushed
from vpn.errors import VpnError
from vpn.server.gateway import Gateway

Reread = Callable[[], ServerConfig]  # the settings again: defaults ← --config file ← flags
LIVE = frozenset({"route", "dns", "dns_search", "log_level", "metrics_max_identities"})
PUSHED = frozenset({"route", "dns", "dns_search"})


def changes(old: ServerConfig, new: ServerConfig) -> list[str]:
    """The names of the settings that differ."""
    return [
        f.name
        for f in dataclasses.fields(ServerConfig)
        if getattr(old, f.name) != getattr(new, f.name)
    ]


def reload(gateway: Gateway, reread: Reread | None) -> dict[str, Any]:
    """Re-read the CRL and the settings; apply what can be applied live. Never raises."""
    gateway.reload_crl(True)
    if reread is None:
        return {"ok": True, "applied": [], "not_applied": [], "clients": 0}
    try:
        new = reread()
        pushed = parse_pushed(new)
        if new.log_level != gateway.config.log_level:
            log.setup(new.log_level, gateway.config.log_format)
    except VpnError as exc:
        log.error("reload_failed", reason=str(exc), action="the running settings stay")
        return {"ok": False, "error": str(exc)}
    changed = changes(gateway.config, new)
    live = [name for name in changed if name in LIVE]
    fixed = [name for name in changed if name not in LIVE]
    for name in live:
        setattr(gateway.config, name, getattr(new, name))
    updated = 0
    if PUSHED & set(live):
        gateway.pushed = pushed
        for session in gateway.table.connected():
            if session.address is not None and not session.closed:
                session.send_frame(gateway.config_for(session).encode())
                updated += 1
    if fixed:
        log.warn(
            "reload_not_live",
            settings=",".join(fixed),
            action="these keep their running values until the server restarts",
        )
    log.event("reloaded", applied=",".join(live) or "-", clients_updated=updated)
    return {"ok": True, "applied": live, "not_applied": fixed, "clients": updated}
