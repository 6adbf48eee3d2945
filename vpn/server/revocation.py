"""The gateway's CRL, re-read while it runs: new TLS context for new connections, and the
revoked serials that end live sessions.

OpenSSL checks the CRL only during a handshake, so a revoked certificate would keep an
established tunnel for as long as it likes. The watcher therefore also reads the CRL itself
(cryptography), checks that the CA signed it, and hands the gateway the set of revoked
serials to compare with every session's certificate.

A CRL that cannot be read — half written, truncated, garbage, signed by someone else — never
stops the gateway: the previous CRL and context stay in force, and the reason is logged once
per change of the file, not once per handshake.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Callable
from pathlib import Path

from cryptography import x509

from vpn import log
from vpn.errors import CredentialError, TlsError

Stamp = tuple[int, int, int]  # (inode, size, mtime in ns): a rename or a rewrite changes it
_NEVER = object()
CRL_POLL = 1.0  # seconds between looks at the CRL file's stamp (one stat)


async def every(interval: float, action: Callable[[], None]) -> None:
    """Call `action` every `interval` seconds until cancelled."""
    while True:
        await asyncio.sleep(interval)
        action()


def _stamp(path: Path) -> Stamp | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def revoked_serials(crl: Path, ca: Path) -> frozenset[int]:
    """The serials listed in `crl`, after checking that `ca` signed it; TlsError otherwise."""
    try:
        data = crl.read_bytes()
        ca_cert = x509.load_pem_x509_certificate(ca.read_bytes())
    except OSError as exc:
        raise TlsError(f"CRL {crl}: {exc.strerror or exc}") from None
    try:
        parsed = x509.load_pem_x509_crl(data)
    except ValueError as exc:
        raise TlsError(f"CRL {crl}: not a PEM CRL ({exc})") from None
    try:
        valid = parsed.is_signature_valid(ca_cert.public_key())  # type: ignore[arg-type]
    except TypeError:
        valid = False
    if not valid:
        raise TlsError(f"CRL {crl}: not signed by the CA {ca}")
    return frozenset(r.serial_number for r in parsed)


class CrlWatcher:
    """Holds the TLS context and the revoked serials, and renews both when the CRL changes."""

    def __init__(self, crl: Path | None, ca: Path, build: Callable[[], ssl.SSLContext]) -> None:
        self.crl = crl
        self.ca = ca
        self._build = build
        self.context = build()  # a broken CRL at start is an error: refuse to start
        self.revoked: frozenset[int] = revoked_serials(crl, ca) if crl else frozenset()
        self._stamp = _stamp(crl) if crl else None
        self._failed: object = _NEVER  # the file state we last failed to read (and logged)

    def poll(self, force: bool = False) -> bool:
        """Re-read the CRL if it changed (or `force`); True when a new one took effect.

        Never raises: on failure the old CRL and context stay, and the reason is logged once
        for each state of the file.
        """
        if self.crl is None:
            return False
        stamp = _stamp(self.crl)
        if not force and (stamp == self._stamp or stamp == self._failed):
            return False
        try:
            revoked = revoked_serials(self.crl, self.ca)
            context = self._build()
        except CredentialError as exc:
            if stamp != self._failed or force:
                log.error(
                    "crl_unreadable",
                    crl=str(self.crl),
                    reason=str(exc),
                    action="the previous CRL stays in force",
                )
            self._failed = stamp
            return False
        self.context, self.revoked = context, revoked
        self._stamp, self._failed = stamp, _NEVER
        log.event("crl_reloaded", crl=str(self.crl), revoked=len(revoked))
        return True
