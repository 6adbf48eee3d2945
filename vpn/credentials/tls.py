"""TLS contexts for the gateway and its clients, and handshake failures explained in words.

Both ends speak TLS 1.3 only and authenticate each other with certificates from one CA
(see `vpn.credentials.pki`). The gateway can check a CRL. OpenSSL reports a refused handshake as a
terse reason code, and which side sees which code is not obvious (in TLS 1.3 a client
learns that the server rejected its certificate only on its first read); `explain`
turns either side's exception into one line a person can act on.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from vpn.errors import TlsError

ALPN = "vpnlab/1"


# -- contexts --------------------------------------------------------------------------------


def _missing(path: Path, what: str) -> TlsError:
    return TlsError(
        f"{what} {path}: no such file",
        advice="make one with `vpn pki` "
        "(e.g. `vpn pki lab DIR`, or `vpn pki init DIR` then `vpn pki issue DIR NAME --server`)",
    )


def _readable(path: Path, what: str) -> Path:
    path = Path(path)
    try:
        with open(path, "rb") as f:
            f.read(1)
    except FileNotFoundError:
        raise _missing(path, what) from None
    except PermissionError:
        raise TlsError(
            f"{what} {path}: permission denied",
            advice="run as a user that can read it "
            "(private keys are mode 0600, readable by their owner only)",
        ) from None
    except IsADirectoryError:
        raise TlsError(f"{what} {path}: is a directory, expected a PEM file") from None
    return path


def _load_chain(ctx: ssl.SSLContext, cert: Path, key: Path, role: str) -> None:
    cert = _readable(cert, f"{role} certificate")
    key = _readable(key, f"{role} private key")
    try:
        ctx.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise TlsError(
                f"private key {key} does not belong to certificate {cert} — "
                "use the .key file that was issued with it"
            ) from exc
        raise TlsError(
            f"{cert} / {key}: not a PEM certificate and unencrypted PEM private key "
            f"({exc.reason or exc}) — re-issue them with `vpn pki issue`"
        ) from exc


def _load_pem(ctx: ssl.SSLContext, path: Path, what: str, marker: bytes) -> None:
    path = _readable(path, what)
    if marker not in path.read_bytes():
        raise TlsError(f"{what} {path}: no '{marker.decode()}' block found in it")
    try:
        ctx.load_verify_locations(cafile=path)
    except ssl.SSLError as exc:
        raise TlsError(f"{what} {path}: unreadable ({exc.reason or exc})") from exc


def _base_context(
    protocol: int, cert: Path, key: Path, ca: Path, crl: Path | None, role: str
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(protocol)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    _load_chain(ctx, cert, key, role)
    _load_pem(ctx, ca, "CA certificate", b"-----BEGIN CERTIFICATE-----")
    if crl is not None:
        _load_pem(ctx, crl, "CRL", b"-----BEGIN X509 CRL-----")
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    ctx.set_alpn_protocols([ALPN])
    return ctx


def server_context(cert: Path, key: Path, ca: Path, crl: Path | None = None) -> ssl.SSLContext:
    """A TLS 1.3 server context that requires a client certificate from `ca`.

    With `crl`, a client whose certificate is listed there is refused. The CRL is read
    now: build a new context to apply a newer one. No session tickets are issued, so
    every connection is fully authenticated (and checked against the CRL) and a handshake
    costs less.
    """
    ctx = _base_context(ssl.PROTOCOL_TLS_SERVER, cert, key, ca, crl, "server")
    ctx.num_tickets = 0
    return ctx


def client_context(cert: Path, key: Path, ca: Path, crl: Path | None = None) -> ssl.SSLContext:
    """A TLS 1.3 client context: presents `cert`, trusts only `ca`, checks the server name.

    Pass the expected gateway name as `server_hostname` when wrapping the socket.
    """
    ctx = _base_context(ssl.PROTOCOL_TLS_CLIENT, cert, key, ca, crl, "client")
    ctx.check_hostname = True
    ctx.hostname_checks_common_name = False
    return ctx


# -- identity --------------------------------------------------------------------------------


def _common_name(info: Mapping[str, Any], field: str = "subject") -> str | None:
    for rdn in info.get(field, ()):
        for attr, value in rdn:
            if attr == "commonName":
                return str(value)
    return None


def peer_identity(sock: ssl.SSLSocket | ssl.SSLObject) -> str:
    """The common name of the peer's verified certificate (after the handshake)."""
    info = sock.getpeercert()
    if not info:
        raise TlsError("the peer sent no certificate (or the handshake is not complete)")
    name = _common_name(info)
    if not name:
        raise TlsError("the peer's certificate has no common name")
    return name


def peer_certificate(sock: ssl.SSLSocket) -> tuple[int, str]:
    """(serial number, SHA-256 fingerprint in hex) of the peer's verified certificate.

    The CN names an identity, but any number of certificates can carry one CN; the gateway
    binds each session to the one certificate it logged in with, so that revoking or
    replacing that certificate can end exactly that session.
    """
    der = sock.getpeercert(binary_form=True)
    if not der:
        raise TlsError("the peer sent no certificate (or the handshake is not complete)")
    cert = x509.load_der_x509_certificate(der)
    return cert.serial_number, cert.fingerprint(hashes.SHA256()).hex()


# -- explaining failures ---------------------------------------------------------------------


def _presented(sock: ssl.SSLSocket | ssl.SSLObject | None) -> list[dict[str, Any]]:
    """The certificates the peer sent, even when we refused them (CPython's chain accessor)."""
    obj = getattr(sock, "_sslobj", None)
    getter = getattr(obj, "get_unverified_chain", None)
    if getter is None:
        return []
    try:
        return [c.get_info() for c in getter() or ()]
    except (AttributeError, ValueError, ssl.SSLError):
        return []


def _names(info: Mapping[str, Any]) -> list[str]:
    names = [
        value for kind, value in info.get("subjectAltName", ()) if kind in ("DNS", "IP Address")
    ]
    return names or [n for n in [_common_name(info)] if n]


def _about(chain: list[dict[str, Any]], issuer: bool = False) -> str:
    """' (certificate for 'x', issued by 'y')' from what the peer sent, or ''."""
    if not chain:
        return ""
    cn = _common_name(chain[0])
    parts = [f"for {cn!r}"] if cn else []
    by = _common_name(chain[0], "issuer")
    if issuer and by:
        parts.append(f"issued by {by!r}")
    return f" (certificate {', '.join(parts)})" if parts else ""


_REJECTED_US = "peer rejected our certificate"
_PKI_HINT = "`vpn pki issue DIR NAME`"

# Alerts the peer sent, and local failures that are not certificate checks: OpenSSL reason → text.
_REASONS = {
    "UNSUPPORTED_PROTOCOL": "protocol version not supported: peer offered TLS below 1.3 "
    "(vpnlab needs TLS 1.3 on both ends)",
    "TLSV1_ALERT_PROTOCOL_VERSION": "protocol version not supported: peer refused our TLS "
    "version (vpnlab speaks TLS 1.3 only; is the peer older or limited to TLS 1.2?)",
    "WRONG_VERSION_NUMBER": "peer does not speak TLS (wrong version number): "
    "is that address and port a vpnlab gateway?",
    "HTTP_REQUEST": "peer sent plain HTTP, not TLS",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "peer did not send a certificate — "
    f"every vpnlab client needs one ({_PKI_HINT} --client)",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "peer requires a certificate and we sent none — "
    f"give the client a certificate and key ({_PKI_HINT} --client)",
    "TLSV1_ALERT_UNKNOWN_CA": f"{_REJECTED_US}: it was signed by an unknown CA "
    "(use a certificate issued by the peer's CA)",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": f"{_REJECTED_US}: certificate has expired "
    f"(issue a new one: {_PKI_HINT}; or check the clocks)",
    "SSLV3_ALERT_CERTIFICATE_REVOKED": f"{_REJECTED_US}: certificate revoked "
    f"(the peer's CRL lists it; a new one: {_PKI_HINT} --force)",
    "SSLV3_ALERT_BAD_CERTIFICATE": f"{_REJECTED_US} (bad certificate): most likely its name is "
    "not the one the peer expected, or it is not valid for the peer",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": f"{_REJECTED_US}: not allowed for this use "
    "(a client certificate used by a server or the reverse? issue with --server / --client)",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": f"{_REJECTED_US} (certificate unknown)",
    "TLSV1_ALERT_ACCESS_DENIED": "peer denied access",
    "TLSV1_ALERT_DECRYPT_ERROR": "peer could not verify our handshake signature "
    "(does our private key belong to our certificate?)",
    "TLSV1_ALERT_NO_APPLICATION_PROTOCOL": f"peer does not speak the {ALPN} protocol (ALPN)",
    "NO_APPLICATION_PROTOCOL": f"peer does not speak the {ALPN} protocol (ALPN)",
    "NO_SHARED_CIPHER": "no cipher suite in common with the peer",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "peer aborted the handshake: no parameters in common",
    "TLSV1_ALERT_INTERNAL_ERROR": "peer reported an internal error during the handshake",
    "UNEXPECTED_EOF_WHILE_READING": "peer closed the connection during the handshake "
    "(it rejected our certificate?)",
    "CERTIFICATE_VERIFY_FAILED": "certificate verification failed",
}

_EOF = "peer closed the connection during the handshake (it rejected our certificate?)"
_NOT_VALID_FOR = re.compile(r"not valid for '(?P<name>.*)'")


def _explain_verify(exc: ssl.SSLCertVerificationError, chain: list[dict[str, Any]]) -> str:
    """Our check of the peer's certificate failed: say which check, and about which cert."""
    code = exc.verify_code
    message = exc.verify_message or ""
    if code in (62, 63, 64):  # host name, e-mail, IP address mismatch
        match = _NOT_VALID_FOR.search(message)
        expected = match.group("name") if match else "?"
        if chain:
            found = ", ".join(repr(n) for n in _names(chain[0])) or "no name"
            return f"server name mismatch: certificate is for {found}, expected {expected!r}"
        return f"server name mismatch: certificate is not valid for {expected!r}"
    about = _about(chain, issuer=code in (2, 18, 19, 20, 21))
    texts = {
        10: f"certificate has expired{about}: issue a new one ({_PKI_HINT})",
        9: f"certificate is not yet valid{about}: check the clocks of both machines",
        23: f"certificate revoked{about}: it is listed in the CRL",
        20: f"certificate signed by an unknown CA{about}: it does not chain to our CA file",
        2: f"certificate signed by an unknown CA{about}: it does not chain to our CA file",
        21: f"certificate signed by an unknown CA{about}: it does not chain to our CA file",
        18: f"certificate signed by an unknown CA{about}: it is self-signed",
        19: f"certificate signed by an unknown CA{about}: its chain ends in an untrusted root",
        7: f"certificate signature is invalid{about}: altered, or signed by another key",
        26: f"certificate not allowed for this use{about}: client and server certificates "
        "are not interchangeable (--client / --server)",
        3: "no CRL for the peer's CA: the CRL file does not belong to the CA file "
        "(regenerate it with `vpn pki crl DIR`)",
        12: "the CRL has expired: refresh it with `vpn pki crl DIR` and restart the server",
        11: "the CRL is not yet valid: check the clocks",
        8: "the CRL's signature is invalid: it was not made by this CA (`vpn pki crl DIR`)",
    }
    if code in texts:
        return texts[code]
    return f"certificate rejected{about}: {message or exc.reason} (X509 error {code})"


def explain(exc: BaseException, sock: ssl.SSLSocket | ssl.SSLObject | None = None) -> str:
    """One line saying why a TLS handshake (or the first read after it) failed.

    Works for either side's exception. With `sock` (the TLS socket or object that failed),
    a client names the server certificate it refused: e.g. "server name mismatch: certificate
    is for 'impostor', expected 'gateway'" instead of "... not valid for 'gateway'". (A
    server cannot name a client certificate it refused: OpenSSL drops it.)
    """
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _explain_verify(exc, _presented(sock))
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return _EOF
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or ""
        if reason in _REASONS:
            return _REASONS[reason]
        if reason.startswith(("SSLV3_ALERT_", "TLSV1_ALERT_", "TLSV13_ALERT_")):
            alert = reason.split("_ALERT_", 1)[1].lower().replace("_", " ")
            return f"peer aborted the handshake with the alert '{alert}'"
        return f"TLS error: {reason.lower().replace('_', ' ') if reason else exc}"
    if isinstance(exc, TlsError):
        return str(exc)
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return _EOF
    if isinstance(exc, TimeoutError):
        return (
            "no answer from the peer in time: the handshake stalled "
            "(is it a vpnlab gateway? is a firewall dropping packets?)"
        )
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused: nothing listens at that address and port (is the server up?)"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    return str(exc) or type(exc).__name__
