"""Compose's variable interpolation (`${VAR:-default}` and friends), as compose does it.

Apart from the reader because it is a small language of its own, tested on its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lab.model.errors import TopologyError


def interpolate_tree(value: Any, env: Mapping[str, str], strict: bool, where: str) -> Any:
    if isinstance(value, str):
        return interpolate(value, env, strict=strict, where=where)
    if isinstance(value, dict):
        return {k: interpolate_tree(v, env, strict, where) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate_tree(v, env, strict, where) for v in value]
    return value


def interpolate(
    text: str, env: Mapping[str, str], *, strict: bool = False, where: str = "compose file"
) -> str:
    """Compose's `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?msg}`,
    `${VAR?msg}`, `${VAR:+alt}`, `${VAR+alt}` and `$$` (defaults may nest)."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch != "$" or i + 1 >= n:
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "{":
            end = _closing_brace(text, i + 2)
            if end < 0:
                raise TopologyError(f"{where}: unclosed '${{' in {text!r}")
            out.append(_expand(text[i + 2 : end], env, strict, where))
            i = end + 1
        elif nxt == "_" or nxt.isalpha():
            j = i + 1
            while j < n and (text[j] == "_" or text[j].isalnum()):
                j += 1
            out.append(env.get(text[i + 1 : j], ""))
            i = j
        else:
            raise TopologyError(f"{where}: invalid interpolation in {text!r} (write $$ for $)")
    return "".join(out)


def _closing_brace(text: str, start: int) -> int:
    depth = 1
    for j in range(start, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return -1


def _expand(expr: str, env: Mapping[str, str], strict: bool, where: str) -> str:
    name_end = 0
    while name_end < len(expr) and (expr[name_end] == "_" or expr[name_end].isalnum()):
        name_end += 1
    name, rest = expr[:name_end], expr[name_end:]
    if not name or name[0].isdigit():
        raise TopologyError(f"{where}: invalid variable name in '${{{expr}}}'")
    value = env.get(name)
    if not rest:
        return value or ""
    colon = rest.startswith(":")
    op = rest[1:2] if colon else rest[:1]
    arg = rest[2:] if colon else rest[1:]
    unset = value is None or (colon and value == "")
    if op == "-":
        return interpolate(arg, env, strict=strict, where=where) if unset else str(value)
    if op == "+":
        return "" if unset else interpolate(arg, env, strict=strict, where=where)
    if op == "?":
        if not unset:
            return str(value)
        if strict:
            message = interpolate(arg, env, strict=False, where=where) or "must be set"
            raise TopologyError(f"{where}: required variable {name} is unset: {message}")
        return ""
    raise TopologyError(f"{where}: invalid interpolation '${{{expr}}}'")
