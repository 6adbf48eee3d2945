"""Creating a certificate authority: the self-signed CA, its empty index and its first CRL."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from vpn.credentials.crl import write_crl_locked
from vpn.credentials.directory import (
    CA_CERT,
    CA_KEY,
    CLOCK_SKEW,
    exists_error,
    key_pem,
    key_usage,
    locked,
    make_directory,
    sign,
    utc_now,
    write_index,
    write_new,
)
from vpn.errors import PkiError


def init_ca(
    directory: Path, common_name: str = "vpnlab CA", days: int = 3650, force: bool = False
) -> Path:
    """Create a CA in `directory` (ca.crt, ca.key, an empty CRL, an empty index); return ca.crt.

    With force, an existing CA is replaced; certificates it issued stop being trusted.
    """
    directory = Path(directory)
    if days < 1:
        raise PkiError(f"CA lifetime must be at least one day, not {days}")
    make_directory(directory)
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    if not force:
        for path in (key_path, cert_path):
            if path.exists():
                raise exists_error(path)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = utc_now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(key_usage(signs_certificates=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    )
    cert = sign(builder, key)
    with locked(directory):
        write_new(key_path, key_pem(key), 0o600, force)
        write_new(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644, force)
        write_index(directory, {"version": 1, "crl_number": 0, "certs": []})
        write_crl_locked(directory, 30)
    return cert_path
