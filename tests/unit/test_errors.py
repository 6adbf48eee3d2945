"""The error family: one line each, the advice after " — ", and TunError an OSError too."""

from __future__ import annotations

import errno

import pytest

from vpn import errors


def test_a_message_alone_or_with_its_advice() -> None:
    plain = errors.ConfigError("pool missing")
    assert (str(plain), plain.message, plain.advice, plain.args) == (
        "pool missing",
        "pool missing",
        "",
        ("pool missing",),
    )
    advised = errors.PkiError("no CA in pki/", advice="run `vpn pki init pki/`")
    assert str(advised) == "no CA in pki/ — run `vpn pki init pki/`"
    assert (advised.message, advised.advice) == ("no CA in pki/", "run `vpn pki init pki/`")
    assert isinstance(advised, errors.CredentialError) and isinstance(advised, errors.VpnError)


def test_an_interface_error_keeps_its_errno() -> None:
    failed = errors.NetConfError("cannot add route", errno.EEXIST, advice="remove the old one")
    assert failed.code == errno.EEXIST and str(failed) == "cannot add route — remove the old one"
    assert failed.message == "cannot add route" and failed.advice == "remove the old one"
    assert errors.InterfaceError("down").code is None
    assert str(errors.InterfaceError("down")) == "down"


@pytest.mark.parametrize(
    ("advice", "text"),
    [
        ("", "cannot open /dev/net/tun"),
        ("load the tun module", "cannot open /dev/net/tun — load the tun module"),
    ],
)
def test_a_tun_error_is_an_oserror_with_errno(advice: str, text: str) -> None:
    failed = errors.TunError(errno.ENODEV, "cannot open /dev/net/tun", advice=advice)
    assert isinstance(failed, OSError) and isinstance(failed, errors.InterfaceError)
    assert failed.errno == errno.ENODEV and failed.code == errno.ENODEV
    assert failed.strerror == text and str(failed) == text
    assert failed.message == "cannot open /dev/net/tun" and failed.advice == advice
    assert str(errors.TunError(errno.EBUSY, "tun0 busy")) == "tun0 busy"
    with pytest.raises(OSError) as caught:
        raise failed
    assert caught.value.errno == errno.ENODEV
