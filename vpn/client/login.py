"""Who the client says it is: the name in its HELLO (its certificate's CN unless --name), and
the password for --user (from --password-file, or asked on the terminal)."""

from __future__ import annotations

import getpass
import sys
from pathlib import Path

from cryptography.x509.oid import NameOID

from vpn.config import ClientConfig
from vpn.credentials.directory import load_cert
from vpn.errors import ConfigError


def certificate_name(path: str) -> str:
    """Our own CN, the name we introduce ourselves with in HELLO."""
    names = load_cert(Path(path)).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else "client"


def read_password(config: ClientConfig) -> str:
    if not config.user:
        return ""
    if config.password_file:
        try:
            with open(config.password_file) as fh:
                return fh.readline().rstrip("\n")
        except OSError as exc:
            raise ConfigError(f"--password-file {config.password_file}: {exc.strerror}") from None
    if not sys.stdin.isatty():
        raise ConfigError(
            "--user needs a password: run in a terminal to be asked, or pass --password-file FILE"
        )
    return getpass.getpass(f"password for {config.user}: ")
