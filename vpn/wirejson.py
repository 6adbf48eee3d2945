"""JSON control messages from an untrusted peer: a dict, or a ProtocolError with the reason.

`json.loads` alone lets hostile input escape as other exceptions: nesting deeper than the
interpreter's recursion limit (RecursionError, after the recursion has been paid for), an
integer of more than 4300 digits (ValueError), bytes that are not UTF-8. Each would end the
session's reader with a traceback instead of an ERROR frame. Here the depth is checked first by
a linear scan, and NaN, Infinity, overflowing floats and duplicate keys are refused as well.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from vpn.errors import ProtocolError

MAX_DEPTH = 8  # a control message is a flat object with a list or two in it
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"?', re.DOTALL)
_BRACKETS = bytes(range(256)).translate(None, b"[]{}")  # everything else: deleted


def _depth(data: bytes) -> int:
    """The deepest nesting of [ and { outside strings, by one linear scan: checked before
    json parses, whose recursion is the cost (and the RecursionError) a hostile peer wants."""
    depth = deepest = 0
    for c in _STRING.sub(b"", data).translate(None, _BRACKETS):
        if c in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _no_constant(name: str) -> Any:
    raise ProtocolError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ProtocolError(f"{text[:16]} is out of range")
    return value


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    message = dict(pairs)
    if len(message) != len(pairs):
        raise ProtocolError("a key appears twice")
    return message


def load_object(payload: bytes | memoryview, what: str) -> dict[str, Any]:
    """A control message as a dict; anything else, however hostile, is a ProtocolError."""
    data = bytes(payload)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(f"{what}: not a JSON object (not UTF-8)") from None
    if _depth(data) > MAX_DEPTH:
        raise ProtocolError(f"{what}: JSON nested deeper than {MAX_DEPTH} levels")
    try:
        message = json.loads(
            text, parse_constant=_no_constant, parse_float=_finite, object_pairs_hook=_unique
        )
    except ProtocolError as exc:
        raise ProtocolError(f"{what}: not a JSON object ({exc})") from None
    except json.JSONDecodeError:
        raise ProtocolError(f"{what}: not a JSON object (JSONDecodeError)") from None
    except RecursionError:  # the depth scan above should make this unreachable
        raise ProtocolError(f"{what}: not a JSON object (nested too deep)") from None
    except ValueError:  # an integer of more than 4300 digits, say
        raise ProtocolError(f"{what}: not a JSON object (a number too long)") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"{what}: not a JSON object")
    return message
