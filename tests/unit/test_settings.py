"""vpn.settings on a small config class: the flag each field gets (its kind, default, help and
metavar), load() from a bare namespace, and which settings of a file are paths."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from vpn import config, settings
from vpn.config import opt
from vpn.errors import ConfigError


@dataclasses.dataclass
class Sample(config.TlsFiles):  # opt() returns a dataclasses.field, as in vpn/config.py
    name: str = opt("gw", "the 100% name", metavar="NAME")
    count: int = opt(3, "how many")
    ratio: float = opt(0.5, "a ratio")
    items: list[str] = opt([], "items", many=True, metavar="ITEM")  # noqa: RUF009
    tags: list[str] = opt(["a"], "tags", many=True)  # noqa: RUF009
    on: bool = opt(False, "switch")


def actions() -> dict[str, argparse.Action]:
    parser = argparse.ArgumentParser()
    settings.add_arguments(parser, Sample)
    return {a.option_strings[0]: a for a in parser._actions}


def test_each_field_gets_its_flag_with_help_default_and_metavar() -> None:
    got = {
        flag: (type(a).__name__, a.dest, a.default, a.type, a.metavar, a.help)
        for flag, a in actions().items()
    }
    assert got == {
        "-h": ("_HelpAction", "help", argparse.SUPPRESS, None, None, got["-h"][5]),
        "--config": (
            "_StoreAction",
            "config",
            None,
            None,
            "FILE",
            "TOML file with these settings (flags win)",
        ),
        "--ca": (
            "_StoreAction",
            "ca",
            None,
            str,
            "FILE",
            "CA certificate that signs both ends (PEM)",
        ),
        "--cert": ("_StoreAction", "cert", None, str, "FILE", "this end's certificate (PEM)"),
        "--key": ("_StoreAction", "key", None, str, "FILE", "this end's private key (PEM)"),
        "--crl": (
            "_StoreAction",
            "crl",
            None,
            str,
            "FILE",
            "certificate revocation list to enforce (PEM); empty: none",
        ),
        "--name": ("_StoreAction", "name", None, str, "NAME", "the 100%% name (default: 'gw')"),
        "--count": ("_StoreAction", "count", None, int, None, "how many (default: 3)"),
        "--ratio": ("_StoreAction", "ratio", None, float, None, "a ratio (default: 0.5)"),
        "--items": ("_AppendAction", "items", None, None, "ITEM", "items"),
        "--tags": ("_AppendAction", "tags", None, None, None, "tags (default: ['a'])"),
        "--on": ("BooleanOptionalAction", "on", None, None, None, "switch (default: False)"),
    }


@dataclasses.dataclass
class Required:
    name: str = dataclasses.field(metadata={"help": "a name"})


def test_a_field_without_a_default_shows_none() -> None:
    parser = argparse.ArgumentParser()
    settings.add_arguments(parser, Required)
    (name,) = [a for a in parser._actions if a.dest == "name"]
    assert name.help == "a name (default: None)" and name.default is None


def test_the_flags_parse_and_load_over_the_defaults() -> None:
    parser = argparse.ArgumentParser()
    settings.add_arguments(parser, Sample)
    assert "the 100% name (default: 'gw')" in " ".join(parser.format_help().split())
    args = parser.parse_args(
        ["--name", "x", "--count", "4", "--items", "a", "--items", "b", "--on"]
    )
    loaded = settings.load(Sample, args)
    assert (loaded.name, loaded.count, loaded.items, loaded.on, loaded.tags) == (
        "x",
        4,
        ["a", "b"],
        True,
        ["a"],
    )
    assert settings.load(Sample, parser.parse_args([])) == Sample()


def test_load_from_a_namespace_without_config_or_flags() -> None:
    assert settings.load(Sample, argparse.Namespace()) == Sample()
    assert settings.load(Sample, argparse.Namespace(count=7)).count == 7


def test_a_wrong_type_in_a_file_names_the_file_and_both_types(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('count = "three"\n')
    with pytest.raises(ConfigError) as info:
        settings.load(Sample, argparse.Namespace(config=str(path)))
    assert str(info.value) == f"{path}: 'count' must be int, not str"
    path.write_text("items = [1]\n")
    with pytest.raises(ConfigError) as info:
        settings.load(Sample, argparse.Namespace(config=str(path)))
    assert str(info.value) == f"{path}: 'items' must be a list of str"


def test_every_file_setting_of_a_config_file_is_relative_to_it(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "server.toml"
    path.parent.mkdir()
    path.write_text(
        'ca = "pki/ca.crt"\ncert = "pki/gw.crt"\nkey = "pki/gw.key"\ncrl = "pki/crl.pem"\n'
        'passwords = "passwd"\npool = "10.9.0.0/24"\n'
    )
    server = settings.load(config.ServerConfig, argparse.Namespace(config=str(path)))
    pki = tmp_path / "etc" / "pki"
    assert (server.ca, server.cert, server.key, server.crl) == (
        str(pki / "ca.crt"),
        str(pki / "gw.crt"),
        str(pki / "gw.key"),
        str(pki / "crl.pem"),
    )
    assert server.passwords == str(tmp_path / "etc" / "passwd") and server.pool == "10.9.0.0/24"

    path.write_text('ca = "/abs/ca.crt"\npassword-file = "secret"\n')
    client = settings.load(config.ClientConfig, argparse.Namespace(config=str(path)))
    assert client.ca == "/abs/ca.crt" and client.password_file == str(tmp_path / "etc" / "secret")
    assert (client.cert, client.key, client.crl) == ("", "", ""), "an empty setting stays empty"
    assert "passwords" not in vars(client), "only the settings the class has"
