"""Issuing server and client certificates from a PKI directory's CA, and listing them.

Keys are ECDSA P-256: signing and verifying are cheap, so a gateway can complete hundreds of
mutual TLS handshakes per second.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vpn.credentials.crl import write_crl_locked
from vpn.credentials.directory import (
    CLOCK_SKEW,
    Kind,
    check_name,
    exists_error,
    key_pem,
    key_usage,
    load_ca,
    locked,
    read_index,
    sign,
    utc_now,
    write_index,
    write_new,
)
from vpn.errors import PkiError

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_RE = re.compile(rf"(?:\*\.)?{_LABEL}(?:\.{_LABEL})*")


def general_name(entry: str) -> x509.GeneralName:
    """One subjectAltName entry: an IP address, or a DNS name (prefixes IP:/DNS: accepted)."""
    value = entry.strip()
    kind = None
    if value[:3].upper() == "IP:":
        kind, value = "ip", value[3:]
    elif value[:4].upper() == "DNS:":
        kind, value = "dns", value[4:]
    if kind != "dns":
        try:
            return x509.IPAddress(ipaddress.ip_address(value))
        except ValueError:
            if kind == "ip":
                raise PkiError(f"subjectAltName {entry!r}: not an IP address") from None
    if len(value) > 253 or not _DNS_RE.fullmatch(value):
        raise PkiError(
            f"subjectAltName {entry!r}: not a DNS name or IP address "
            "(ASCII letters, digits, '-' and '.', e.g. gateway or vpn.example.org)"
        )
    return x509.DNSName(value.lower())


def client_name(name: str) -> x509.GeneralName:
    """The subjectAltName that names a client: a DNS name, an e-mail address, or a URN."""
    if _DNS_RE.fullmatch(name) and "*" not in name:
        return x509.DNSName(name.lower())
    local, at, domain = name.partition("@")
    if at and local and _DNS_RE.fullmatch(domain) and "@" not in domain:
        return x509.RFC822Name(name)
    return x509.UniformResourceIdentifier(f"urn:vpnlab:client:{name}")


def issue(
    directory: Path,
    name: str,
    kind: Kind,
    sans: Sequence[str] = (),
    days: int = 825,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    force: bool = False,
    common_name: str | None = None,
) -> tuple[Path, Path]:
    """Issue a certificate DIR/NAME.crt with a new key DIR/NAME.key; return (cert, key).

    The subject CN is `common_name` (default: `name`). Server certificates carry
    subjectAltName entries for the CN and every entry of `sans` (DNS names or IP addresses)
    and are limited to serverAuth; client certificates to clientAuth. `not_before`/`not_after`
    override `days`, and may both lie in the past (an expired certificate, for tests).
    """
    directory = Path(directory)
    check_name(name)
    if kind not in ("server", "client"):
        raise PkiError(f"certificate kind must be 'server' or 'client', not {kind!r}")
    cn = common_name if common_name is not None else name
    if not cn or len(cn) > 64:
        raise PkiError(f"common name {cn!r} must be 1-64 characters")
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    if not force:
        for path in (key_path, cert_path):
            if path.exists():
                raise exists_error(path)
    ca_cert, ca_key = load_ca(directory)

    now = utc_now()
    start = not_before if not_before is not None else now - CLOCK_SKEW
    end = not_after if not_after is not None else now + timedelta(days=days)
    if start.tzinfo is None or end.tzinfo is None:
        raise PkiError("not_before/not_after must be timezone-aware datetimes (e.g. UTC)")
    if end <= start:
        raise PkiError(f"certificate would end ({end:%Y-%m-%d %H:%M}) before it starts ({start})")

    # Servers are found by these names; clients carry their name too, because verifiers
    # following RFC 5280 profiles (e.g. cryptography's) require a subjectAltName on every leaf.
    names: list[x509.GeneralName] = [client_name(cn)] if kind == "client" else []
    for entry in ([cn] if kind == "server" else []) + list(sans):
        general = general_name(entry)
        if general not in names:
            names.append(general)

    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.SERVER_AUTH if kind == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage(signs_certificates=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = sign(builder, ca_key)

    with locked(directory):
        index = read_index(directory)
        write_new(key_path, key_pem(key), 0o600, force)
        write_new(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644, force)
        superseded = _revoke_superseded(index, name)
        index["certs"].append(
            {
                "name": name,
                "kind": kind,
                "common_name": cn,
                "serial": format(cert.serial_number, "x"),
                "not_after": end.astimezone(UTC).isoformat(timespec="seconds"),
                "revoked": False,
                "revoked_at": None,
            }
        )
        write_index(directory, index)
        if superseded:
            write_crl_locked(directory, 30)
    return cert_path, key_path


def _revoke_superseded(index: dict[str, Any], name: str) -> int:
    """Mark every live certificate already issued under `name` revoked; return how many.

    Re-issuing (`issue --force`) replaces NAME.crt on disk, but a copy of the old certificate
    and key may live on: a stolen laptop is the usual reason to re-issue. Left valid, it would
    still log in as the same identity, so it is revoked here and the CRL is rewritten.
    """
    stamp = utc_now().isoformat(timespec="seconds")
    count = 0
    for entry in index["certs"]:
        if entry.get("name") == name and not entry.get("revoked"):
            entry["revoked"] = True
            entry["revoked_at"] = stamp
            count += 1
    return count


def list_certs(directory: Path) -> list[dict[str, Any]]:
    """The index entries of `directory`, oldest first (name, kind, serial, not_after, revoked)."""
    directory = Path(directory)
    load_ca(directory)
    return [dict(e) for e in read_index(directory)["certs"]]
