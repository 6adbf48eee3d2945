"""The offline base image installs from the host's own apt sources (images/base/build.sh)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

BUILD = Path(__file__).resolve().parents[2] / "images" / "base" / "build.sh"

DEB822 = """\
Types: deb
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates trixie
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://disabled.example/debian
Suites: bookworm
Components: main
Enabled: no

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm
Components: main
"""

ONE_LINE = """\
# comment
deb [arch=amd64] http://security.example/debian-security bookworm-security main
deb http://other.example/repo nodistro main
"""


def print_sources(apt_etc: Path, **env: str) -> list[str]:
    environ = {k: v for k, v in os.environ.items() if k != "DEBIAN_MIRROR"}
    environ |= {"VPNLAB_APT_ETC": str(apt_etc), **env}
    done = subprocess.run(
        ["bash", str(BUILD), "--print-sources"],
        env=environ,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.splitlines()


def test_every_enabled_bookworm_suite_of_the_host_and_nothing_else(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEB822)
    (tmp_path / "sources.list").write_text(ONE_LINE)
    keyring = "[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]"
    assert print_sources(tmp_path) == sorted(
        [
            f"deb {keyring} http://mirror.example/debian bookworm main contrib",
            f"deb {keyring} http://mirror.example/debian bookworm-updates main contrib",
            "deb [arch=amd64] http://security.example/debian-security bookworm-security main",
        ]
    )


def test_debian_mirror_overrides_the_host(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text(ONE_LINE)
    got = print_sources(tmp_path, DEBIAN_MIRROR="http://given.example/debian")
    assert got == ["deb http://given.example/debian bookworm main"]


def test_a_host_without_sources_yields_none(tmp_path: Path) -> None:
    assert print_sources(tmp_path) == []
