"""Reading settings: one command-line flag per field of the config dataclasses, and `load`,
which layers dataclass defaults ← a TOML file (--config) ← the flags given. Paths in the file
are relative to the file. The dataclasses themselves, and the checks on values, are pure and
live in `vpn.config`."""

from __future__ import annotations

import argparse
import dataclasses
import tomllib
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

from vpn.config import TlsFiles, flag
from vpn.errors import ConfigError

C = TypeVar("C", bound=TlsFiles)


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per field; defaults are shown in --help but applied later (file may override)."""
    parser.add_argument(
        "--config", metavar="FILE", help="TOML file with these settings (flags win)"
    )
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        factory = f.default_factory
        default = (
            f.default
            if f.default is not dataclasses.MISSING
            else (factory() if callable(factory) else None)
        )
        kind = hints[f.name]
        text = (
            f"{f.metadata['help']} (default: {default!r})"
            if default not in ("", [])
            else f.metadata["help"]
        ).replace("%", "%%")  # argparse expands %-formats in help ("tun%d")
        if kind is bool:
            parser.add_argument(
                flag(f.name),
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=text,
            )
        elif f.metadata.get("many"):
            parser.add_argument(
                flag(f.name),
                dest=f.name,
                action="append",
                default=None,
                help=text,
                metavar=f.metadata.get("metavar"),
            )
        else:
            parser.add_argument(
                flag(f.name),
                dest=f.name,
                type=kind,
                default=None,
                help=text,
                metavar=f.metadata.get("metavar"),
            )


def _coerce(cls: type, key: str, value: Any, source: str) -> Any:
    kind = get_type_hints(cls)[key]
    if get_origin(kind) is list:
        (item,) = get_args(kind)
        if not isinstance(value, list) or not all(isinstance(v, item) for v in value):
            raise ConfigError(f"{source}: '{key}' must be a list of {item.__name__}")
        return list(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{source}: '{key}' must be {kind.__name__}, not {type(value).__name__}")
    return value


def load(cls: type[C], args: argparse.Namespace) -> C:
    """Build cls from its defaults, then the TOML file named by --config, then the flags."""
    values: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(cls)}
    path = getattr(args, "config", None)
    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
        for key, value in data.items():
            attr = key.replace("-", "_")
            if attr not in names:
                raise ConfigError(f"{path}: unknown setting '{key}' (see --help for the list)")
            values[attr] = _coerce(cls, attr, value, str(path))
    for name in names:
        value = getattr(args, name, None)
        if value is not None:
            values[name] = value
    config = cls(**values)
    base = Path(path).parent if path else None
    _resolve_paths(config, base)
    return config


def _resolve_paths(config: Any, base: Path | None) -> None:
    """Relative file names in a config file are relative to that file."""
    if base is None:
        return
    for name in ("ca", "cert", "key", "crl", "passwords", "password_file"):
        value = getattr(config, name, "")
        if value and not Path(value).is_absolute():
            setattr(config, name, str(base / value))
