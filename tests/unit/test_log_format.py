"""The two log formats line by line: the time stamp, the level, quoting and escaping, and what
setup() does to the "vpn" logger."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from vpn import log
from vpn.errors import ConfigError

# 2001-09-09T01:46:40.250Z
WHEN = 1_000_000_000.25


@pytest.fixture(autouse=True)
def vpn_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("vpn")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield logger
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]


def record(level: int, fields: dict[str, object] | None, msg: str = "plain") -> logging.LogRecord:
    made = logging.LogRecord("vpn", level, __file__, 1, msg, None, None)
    made.created, made.msecs = WHEN, 250.0
    if fields is not None:
        made.fields = fields
    return made


def test_a_logfmt_line_is_exact() -> None:
    fields = {"event": "x", "empty": "", "space": "a b", "slash": "a\\b", "q": 'say "hi"', "n": 3}
    assert log._Formatter().format(record(logging.WARNING, fields)) == (
        '2001-09-09T01:46:40.250Z warning event=x empty="" space="a b" slash="a\\\\b" '
        'q="say \\"hi\\"" n=3'
    )
    assert log._quote("XXXX") == "XXXX" and log._quote("a\\b") == '"a\\\\b"'
    assert log._quote("\x1b[2J\u2028") == '"\\x1b[2J\\u2028"'


def test_a_record_from_outside_vpn_log_is_its_message() -> None:
    assert log._Formatter().format(record(logging.ERROR, None, "disk full")) == (
        '2001-09-09T01:46:40.250Z error msg="disk full"'
    )
    line = log._JsonFormatter().format(record(logging.INFO, None, "disk full"))
    assert line == '{"time":"2001-09-09T01:46:40.250Z","level":"info","msg":"disk full"}'


def test_a_json_line_is_compact_ascii_and_keeps_time_and_level_first() -> None:
    fields = {"event": "x", "level": "forged", "peer": "é\u2028", "n": 1, "ok": True, "o": None}
    line = log._JsonFormatter().format(record(logging.INFO, fields))
    assert line == (
        '{"time":"2001-09-09T01:46:40.250Z","level":"info","event":"x",'
        '"peer":"\\u00e9\\u2028","n":1,"ok":true,"o":null}'
    )
    assert json.loads(line)["peer"] == "é\u2028"


def test_setup_owns_the_vpn_logger_and_levels_are_named(
    vpn_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    above = io.StringIO()
    root = logging.getLogger()
    handler = logging.StreamHandler(above)
    root.addHandler(handler)
    try:
        log.setup()
        assert vpn_logger.level == logging.INFO and vpn_logger.propagate is False
        assert len(vpn_logger.handlers) == 1
        log.event("hidden", level=logging.DEBUG)
        log.event("shown", n=1)
        log.warn("careful", n=2)
        log.error("broken", n=3)
    finally:
        root.removeHandler(handler)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == [
        "info event=shown n=1",
        "warning event=careful n=2",
        "error event=broken n=3",
    ]
    assert above.getvalue() == "", "nothing reaches the root logger's handlers"


def test_setup_refuses_an_unknown_level_or_format() -> None:
    with pytest.raises(ConfigError) as info:
        log.setup("loud")
    assert str(info.value) == "log level 'loud': use debug, info, warning or error"
    with pytest.raises(ConfigError) as info:
        log.setup("info", "xml")
    assert str(info.value) == "log format 'xml': use logfmt or json (--log-format)"
