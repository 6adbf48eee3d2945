"""One structured line per event (logfmt): easy to read, easy to grep, easy to assert on."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

_logger = logging.getLogger("vpn")


def _quote(value: Any) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' ="\n'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'
    return text


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        fields = getattr(record, "fields", None)
        if fields is None:
            fields = {"msg": record.getMessage()}
        body = " ".join(f"{k}={_quote(v)}" for k, v in fields.items())
        return f"{stamp}.{int(record.msecs):03d}Z {record.levelname.lower()} {body}"


def setup(level: str = "info") -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"log level {level!r}: use debug, info, warning or error")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    _logger.handlers[:] = [handler]
    _logger.setLevel(numeric)
    _logger.propagate = False


def event(name: str, level: int = logging.INFO, **fields: Any) -> None:
    if _logger.isEnabledFor(level):
        _logger.log(level, name, extra={"fields": {"event": name, **fields}})


def warn(name: str, **fields: Any) -> None:
    event(name, logging.WARNING, **fields)


def error(name: str, **fields: Any) -> None:
    event(name, logging.ERROR, **fields)
