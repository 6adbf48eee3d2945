"""Revocation: marking certificates revoked in the index, and the CRL the gateway enforces."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from vpn.credentials.directory import (
    CLOCK_SKEW,
    CRL_FILE,
    INDEX_FILE,
    check_name,
    load_ca,
    locked,
    read_index,
    utc_now,
    write_index,
)
from vpn.credentials.files import write_replace
from vpn.errors import PkiError


def revoke(directory: Path, name: str) -> Path:
    """Revoke every certificate issued under `name` and rewrite the CRL; return crl.pem.

    Servers read the CRL when they build their TLS context: restart them to apply it.
    """
    directory = Path(directory)
    check_name(name)
    load_ca(directory)
    with locked(directory):
        index = read_index(directory)
        entries = [e for e in index["certs"] if e.get("name") == name]
        if not entries:
            raise PkiError(
                f"no certificate named {name!r} in {directory / INDEX_FILE} "
                f"(see `vpn pki list {directory}`)"
            )
        stamp = utc_now().isoformat(timespec="seconds")
        for entry in entries:
            if not entry.get("revoked"):
                entry["revoked"] = True
                entry["revoked_at"] = stamp
        write_index(directory, index)
        return write_crl_locked(directory, 30)


def write_crl(directory: Path, days: int = 30) -> Path:
    """(Re)write DIR/crl.pem from the index, valid for `days`; return its path."""
    directory = Path(directory)
    load_ca(directory)
    with locked(directory):
        return write_crl_locked(directory, days)


def write_crl_locked(directory: Path, days: int) -> Path:
    if days < 1:
        raise PkiError(f"CRL lifetime must be at least one day, not {days}")
    ca_cert, ca_key = load_ca(directory)
    index = read_index(directory)
    index["crl_number"] = int(index.get("crl_number", 0)) + 1
    now = utc_now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - CLOCK_SKEW)
        .next_update(now + timedelta(days=days))
        .add_extension(x509.CRLNumber(index["crl_number"]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            ),
            critical=False,
        )
    )
    for entry in index["certs"]:
        if entry.get("revoked"):
            when = datetime.fromisoformat(entry.get("revoked_at") or now.isoformat())
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(int(entry["serial"], 16))
                .revocation_date(when)
                .build()
            )
    crl = builder.sign(ca_key, hashes.SHA256())
    path = directory / CRL_FILE
    write_replace(path, crl.public_bytes(serialization.Encoding.PEM), 0o644)
    write_index(directory, index)
    return path
