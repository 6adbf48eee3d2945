"""One structured line per event (logfmt): easy to read, easy to grep, easy to assert on."""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any

_logger = logging.getLogger("vpn")


# Characters a peer could use to forge or hide log lines: C0 controls (\r, \n, ESC for terminal
# escapes, NUL), DEL, C1 controls, the Unicode line and paragraph separators and the bidi
# overrides (which reorder what a reader sees). Each becomes a
# visible \xNN / \uNNNN escape, so one event stays one line and nothing a client names (its CN,
# a reason it sends) can move a terminal's cursor or start a line of its own.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NEEDS_QUOTES = re.compile('[ ="\\\\]')


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _quote(value: Any) -> str:
    text = str(value)
    if text == "" or _NEEDS_QUOTES.search(text) or _UNSAFE.search(text):
        text = text.replace("\\", "\\\\").replace('"', '\\"')
        return '"' + _UNSAFE.sub(_escape, text) + '"'
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
