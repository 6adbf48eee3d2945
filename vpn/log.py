"""One structured line per event: logfmt for people (easy to read, grep and assert on), or one
JSON object per line (`--log-format json`) for collectors. Either way one event is one line, and
nothing a peer sends can forge another one."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

from vpn.errors import ConfigError

_logger = logging.getLogger("vpn")
FORMATS = ("logfmt", "json")


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


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return {"msg": record.getMessage()} if fields is None else fields


def _stamp(record: logging.LogRecord) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{stamp}.{int(record.msecs):03d}Z"


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body = " ".join(f"{k}={_quote(v)}" for k, v in _fields(record).items())
        return f"{_stamp(record)} {record.levelname.lower()} {body}"


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


class _JsonFormatter(logging.Formatter):
    """{"time", "level", "event", ...fields}. ensure_ascii escapes every control character and
    every non-ASCII one (U+2028, the bidi overrides) as \\uXXXX: a line is always one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {"time": _stamp(record), "level": record.levelname.lower()}
        for key, value in _fields(record).items():
            line.setdefault(key, _plain(value))
        return json.dumps(line, ensure_ascii=True, separators=(",", ":"))


def setup(level: str = "info", fmt: str = "logfmt") -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ConfigError(f"log level {level!r}: use debug, info, warning or error")
    if fmt not in FORMATS:
        raise ConfigError(f"log format {fmt!r}: use logfmt or json (--log-format)")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _Formatter())
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
