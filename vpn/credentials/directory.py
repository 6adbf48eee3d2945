"""A PKI directory: where each file lives, the lock and index that guard it, and reading back
the certificates and keys in it, and how they are signed. Everything else in
`vpn.credentials` that touches a PKI goes through these, so the layout is written down once:

    DIR/ca.crt  DIR/ca.key      the CA (self-signed)
    DIR/crl.pem                 the certificate revocation list, signed by the CA
    DIR/index.json              every issued certificate: name, kind, serial, not-after, revoked
    DIR/NAME.crt  DIR/NAME.key  one pair per issued certificate

Private keys are created with mode 0600 and never replaced unless the caller asks (force=True).
The directory itself is created 0700 whatever the umask: its listing (which names hold keys,
the index) is nobody else's business either. An existing directory is left as it is — it may
be shared on purpose — but one open to group or others gets a warning saying how to close it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from vpn import log
from vpn.credentials.files import write_replace
from vpn.errors import PkiError

Kind = Literal["server", "client"]

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
CRL_FILE = "crl.pem"
INDEX_FILE = "index.json"
LOCK_FILE = ".lock"
LAB_LOCK_FILE = ".lab.lock"
ROGUE_DIR = "rogue"

# Certificates start a little in the past: a peer whose clock lags slightly still accepts them.
CLOCK_SKEW = timedelta(minutes=5)
# A CRL this close to its next update is rewritten by lab_pki.
CRL_REFRESH = timedelta(days=7)

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
_RESERVED = frozenset({"ca"})


def utc_now() -> datetime:
    return datetime.now(UTC)


def check_name(name: str) -> str:
    """Return `name` if it can be a certificate name (it is also a file name), else raise."""
    if not _NAME_RE.fullmatch(name) or name.endswith((".crt", ".key")):
        raise PkiError(
            f"invalid certificate name {name!r}: use 1-64 characters from A-Z a-z 0-9 _ . @ -, "
            "starting with a letter or digit"
        )
    if name in _RESERVED:
        raise PkiError(f"invalid certificate name {name!r}: it is reserved for the CA files")
    return name


def make_directory(directory: Path) -> None:
    """Create a PKI directory with mode 0700 (parents as the umask says); warn if an existing
    one is open to group or others."""
    try:
        directory.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        if not directory.is_dir():
            raise PkiError(f"{directory} exists and is not a directory") from None
        mode = directory.stat().st_mode & 0o777
        if mode & 0o077:
            log.warn(
                "pki_directory_open",
                directory=str(directory),
                mode=f"{mode:04o}",
                fix=f"chmod 700 {directory}",
            )
        return
    except OSError as exc:
        raise PkiError(f"{directory}: cannot create: {exc.strerror or exc}") from exc
    os.chmod(directory, 0o700)  # mkdir's mode is masked by the umask; this is not


def exists_error(path: Path) -> PkiError:
    return PkiError(f"{path} exists; pass force=True / --force to replace it")


def write_new(path: Path, data: bytes, mode: int, force: bool) -> None:
    """Write a file that must not exist yet (O_EXCL); with force, replace it atomically."""
    if not force:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        except FileExistsError:
            raise exists_error(path) from None
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return
    write_replace(path, data, mode)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@contextlib.contextmanager
def locked(directory: Path, name: str = LOCK_FILE) -> Iterator[None]:
    """Serialise changes to one PKI directory (index and CRL) between processes."""
    fd = os.open(directory / name, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def read_index(directory: Path) -> dict[str, Any]:
    path = directory / INDEX_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {"version": 1, "crl_number": 0, "certs": []}
    except (OSError, ValueError) as exc:
        raise PkiError(
            f"{path}: unreadable index ({exc}); restore it or re-create the PKI"
        ) from exc
    if not isinstance(data, dict) or not isinstance(data.get("certs"), list):
        raise PkiError(f"{path}: not a vpnlab PKI index; restore it or re-create the PKI")
    return data


def write_index(directory: Path, index: dict[str, Any]) -> None:
    text = json.dumps(index, indent=2, sort_keys=True) + "\n"
    write_replace(directory / INDEX_FILE, text.encode(), 0o644)


def load_cert(path: Path) -> x509.Certificate:
    """Read a PEM certificate; a missing or broken file is a PkiError naming it."""
    try:
        return x509.load_pem_x509_certificate(Path(path).read_bytes())
    except FileNotFoundError:
        raise PkiError(f"{path}: no such file — create it with `vpn pki`") from None
    except (OSError, ValueError) as exc:
        raise PkiError(f"{path}: not a readable PEM certificate ({exc})") from exc


def load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except FileNotFoundError:
        raise PkiError(f"{path}: no such file — create it with `vpn pki`") from None
    except (OSError, ValueError, TypeError) as exc:
        raise PkiError(f"{path}: not a readable unencrypted PEM private key ({exc})") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{path}: not an ECDSA key; re-create the PKI with `vpn pki init`")
    return key


def load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    if not (directory / CA_CERT).exists():
        raise PkiError(
            f"{directory / CA_CERT}: no CA here — create one with `vpn pki init {directory}`"
        )
    return load_cert(directory / CA_CERT), load_key(directory / CA_KEY)


def sign(builder: x509.CertificateBuilder, key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    return builder.sign(key, hashes.SHA256())


def key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    """What every key of this PKI may do: sign (handshakes); the CA's also certificates and CRLs."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )
