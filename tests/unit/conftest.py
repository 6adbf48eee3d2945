"""Fixtures shared by the unit tests."""

from __future__ import annotations

import pytest

# scrypt at N=2^4 instead of 2^17: microseconds and kilobytes instead of 0.3 s and 128 MiB.
CHEAP_SCRYPT_N = 2**4


@pytest.fixture
def cheap_scrypt(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Hash new passwords with a tiny scrypt cost (the tests of the file format, the upgrade and
    set/remove); a test marked `real_scrypt` keeps the production cost. Returns today's N."""
    from vpn.credentials import passwords

    if request.node.get_closest_marker("real_scrypt") is not None:
        return passwords.SCRYPT_N
    monkeypatch.setattr(passwords, "SCRYPT_N", CHEAP_SCRYPT_N)
    return CHEAP_SCRYPT_N
