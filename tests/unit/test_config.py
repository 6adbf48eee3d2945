"""Settings: defaults, TOML file, flags, and the errors for each wrong one."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from vpn import config, settings


def parse(cls: type, argv: list[str]) -> object:
    parser = argparse.ArgumentParser()
    settings.add_arguments(parser, cls)
    return settings.load(cls, parser.parse_args(argv))


def test_defaults() -> None:
    cfg = parse(config.ServerConfig, [])
    assert cfg.pool == "192.168.53.0/24"
    assert cfg.listen == "[::]:4433"  # IPv4 and IPv6, one dual-stack socket
    assert cfg.route == []
    assert cfg.client_to_client is False


def test_file_then_flags_win(tmp_path: Path) -> None:
    path = tmp_path / "server.toml"
    path.write_text(
        'pool = "10.8.0.0/24"\nroute = ["192.168.60.0/24"]\nkeepalive = 5\nca = "pki/ca.crt"\n'
        "client-to-client = true\n"
    )
    cfg = parse(
        config.ServerConfig,
        ["--config", str(path), "--keepalive", "2.5", "--no-client-to-client"],
    )
    assert cfg.pool == "10.8.0.0/24"
    assert cfg.route == ["192.168.60.0/24"]
    assert cfg.keepalive == 2.5
    assert cfg.client_to_client is False
    assert cfg.ca == str(tmp_path / "pki" / "ca.crt")  # relative to the file


def test_repeatable_flags() -> None:
    cfg = parse(config.ServerConfig, ["--route", "10.1.0.0/16", "--route", "10.2.0.0/16"])
    assert cfg.route == ["10.1.0.0/16", "10.2.0.0/16"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('keepalive = "soon"\n', "'keepalive' must be float"),
        ('route = "10.0.0.0/8"\n', "'route' must be a list of str"),
        ("colour = 3\n", "unknown setting 'colour'"),
        ("pool = \n", "server.toml"),
        ("max-clients = true\n", "'max_clients' must be int"),
    ],
)
def test_bad_files_say_what(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "server.toml"
    path.write_text(text)
    with pytest.raises(config.ConfigError, match=reason):
        parse(config.ServerConfig, ["--config", str(path)])


def test_missing_file() -> None:
    with pytest.raises(config.ConfigError, match="does not exist"):
        parse(config.ServerConfig, ["--config", "/nonexistent/server.toml"])


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("gateway", None),
        ("gateway:", "port must be a number"),
        (":4433", "host missing"),
        ("h:70000", "port"),
    ],
)
def test_endpoints(text: str, reason: str | None) -> None:
    if reason is None:
        assert config.parse_endpoint(text, "--server") == ("gateway", 4433)
    else:
        with pytest.raises(config.ConfigError, match=reason):
            config.parse_endpoint(text, "--server")


def test_client_subnets() -> None:
    parsed = config.parse_client_subnets(["router=192.168.50.0/24", "router=10.5.0.0/16"])
    assert [str(n) for n in parsed["router"]] == ["192.168.50.0/24", "10.5.0.0/16"]
    with pytest.raises(config.ConfigError, match="NAME=CIDR"):
        config.parse_client_subnets(["192.168.50.0/24"])
    with pytest.raises(config.ConfigError, match="host bits"):
        config.parse_client_subnets(["r=192.168.50.1/24"])


def test_tls_files_required() -> None:
    cfg = parse(config.ClientConfig, ["--server", "gw:4433"])
    with pytest.raises(config.ConfigError, match=r"--ca, --cert, --key.*vpn pki lab"):
        config.require_tls_files(cfg, "client")


@pytest.mark.parametrize("verb", ["server", "client", "status", "pki", "passwd"])
def test_every_help_text_renders(verb: str, capsys: pytest.CaptureFixture[str]) -> None:
    from vpn.cli import build_parser

    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([verb, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: vpn" in out
    if verb in ("server", "client"):
        assert "(default: 'tun%d')" in out
