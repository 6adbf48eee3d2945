"""How interface set-up reports: the errno and text of a pyroute2 (or OS) error, the hint that
root is missing, and the structured log lines of the `vpn.netconf` logger."""

from __future__ import annotations

import errno
import logging
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

_log = logging.getLogger("vpn.netconf")


def event(level: int, name: str, **fields: Any) -> None:
    if _log.isEnabledFor(level):
        text = " ".join(f"{k}={v}" for k, v in fields.items())
        _log.log(level, f"{name} {text}", extra={"fields": {"event": name, **fields}})


def code_of(err: BaseException) -> int | None:
    return getattr(err, "code", None) or getattr(err, "errno", None)


def strerror(err: BaseException) -> str:
    if isinstance(err, NetlinkError) and len(err.args) > 1:
        return str(err.args[1])
    return getattr(err, "strerror", None) or str(err)


def perm_hint(err: NetlinkError) -> str:
    if err.code in (errno.EPERM, errno.EACCES):
        return " — needs root or CAP_NET_ADMIN (docker: --cap-add NET_ADMIN)"
    return ""
