"""A small certificate authority for the VPN: CA, server and client certificates, revocation.

Keys are ECDSA P-256: signing and verifying are cheap, so a gateway can complete hundreds of
mutual TLS handshakes per second. A PKI lives in one directory:

    DIR/ca.crt  DIR/ca.key      the CA (self-signed)
    DIR/crl.pem                 the certificate revocation list, signed by the CA
    DIR/index.json              every issued certificate: name, kind, serial, not-after, revoked
    DIR/NAME.crt  DIR/NAME.key  one pair per issued certificate

Private keys are created with mode 0600 and never replaced unless the caller asks (force=True).
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vpn.files import write_replace

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
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_RE = re.compile(rf"(?:\*\.)?{_LABEL}(?:\.{_LABEL})*")
_RESERVED = frozenset({"ca"})


class PkiError(Exception):
    """A PKI operation failed; the message says what, why and what to do."""


# -- small helpers ---------------------------------------------------------------------------


def _now() -> datetime:
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


def _general_name(entry: str) -> x509.GeneralName:
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


def _client_name(name: str) -> x509.GeneralName:
    """The subjectAltName that names a client: a DNS name, an e-mail address, or a URN."""
    if _DNS_RE.fullmatch(name) and "*" not in name:
        return x509.DNSName(name.lower())
    local, at, domain = name.partition("@")
    if at and local and _DNS_RE.fullmatch(domain) and "@" not in domain:
        return x509.RFC822Name(name)
    return x509.UniformResourceIdentifier(f"urn:vpnlab:client:{name}")


def _exists_error(path: Path) -> PkiError:
    return PkiError(f"{path} exists; pass force=True / --force to replace it")


def _write_new(path: Path, data: bytes, mode: int, force: bool) -> None:
    """Write a file that must not exist yet (O_EXCL); with force, replace it atomically."""
    if not force:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        except FileExistsError:
            raise _exists_error(path) from None
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return
    write_replace(path, data, mode)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@contextlib.contextmanager
def _locked(directory: Path, name: str = LOCK_FILE) -> Iterator[None]:
    """Serialise changes to one PKI directory (index and CRL) between processes."""
    fd = os.open(directory / name, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read_index(directory: Path) -> dict[str, Any]:
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


def _write_index(directory: Path, index: dict[str, Any]) -> None:
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


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except FileNotFoundError:
        raise PkiError(f"{path}: no such file — create it with `vpn pki`") from None
    except (OSError, ValueError, TypeError) as exc:
        raise PkiError(f"{path}: not a readable unencrypted PEM private key ({exc})") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{path}: not an ECDSA key; re-create the PKI with `vpn pki init`")
    return key


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    if not (directory / CA_CERT).exists():
        raise PkiError(
            f"{directory / CA_CERT}: no CA here — create one with `vpn pki init {directory}`"
        )
    return load_cert(directory / CA_CERT), _load_key(directory / CA_KEY)


def _sign(builder: x509.CertificateBuilder, key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    return builder.sign(key, hashes.SHA256())


# -- the CA ----------------------------------------------------------------------------------


def init_ca(
    directory: Path, common_name: str = "vpnlab CA", days: int = 3650, force: bool = False
) -> Path:
    """Create a CA in `directory` (ca.crt, ca.key, an empty CRL, an empty index); return ca.crt.

    With force, an existing CA is replaced; certificates it issued stop being trusted.
    """
    directory = Path(directory)
    if days < 1:
        raise PkiError(f"CA lifetime must be at least one day, not {days}")
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    if not force:
        for path in (key_path, cert_path):
            if path.exists():
                raise _exists_error(path)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
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
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    )
    cert = _sign(builder, key)
    with _locked(directory):
        _write_new(key_path, _key_pem(key), 0o600, force)
        _write_new(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644, force)
        _write_index(directory, {"version": 1, "crl_number": 0, "certs": []})
        _write_crl_locked(directory, 30)
    return cert_path


# -- certificates ----------------------------------------------------------------------------


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
                raise _exists_error(path)
    ca_cert, ca_key = _load_ca(directory)

    now = _now()
    start = not_before if not_before is not None else now - CLOCK_SKEW
    end = not_after if not_after is not None else now + timedelta(days=days)
    if start.tzinfo is None or end.tzinfo is None:
        raise PkiError("not_before/not_after must be timezone-aware datetimes (e.g. UTC)")
    if end <= start:
        raise PkiError(f"certificate would end ({end:%Y-%m-%d %H:%M}) before it starts ({start})")

    # Servers are found by these names; clients carry their name too, because verifiers
    # following RFC 5280 profiles (e.g. cryptography's) require a subjectAltName on every leaf.
    names: list[x509.GeneralName] = [_client_name(cn)] if kind == "client" else []
    for entry in ([cn] if kind == "server" else []) + list(sans):
        general = _general_name(entry)
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
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = _sign(builder, ca_key)

    with _locked(directory):
        index = _read_index(directory)
        _write_new(key_path, _key_pem(key), 0o600, force)
        _write_new(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644, force)
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
        _write_index(directory, index)
    return cert_path, key_path


def revoke(directory: Path, name: str) -> Path:
    """Revoke every certificate issued under `name` and rewrite the CRL; return crl.pem.

    Servers read the CRL when they build their TLS context: restart them to apply it.
    """
    directory = Path(directory)
    check_name(name)
    _load_ca(directory)
    with _locked(directory):
        index = _read_index(directory)
        entries = [e for e in index["certs"] if e.get("name") == name]
        if not entries:
            raise PkiError(
                f"no certificate named {name!r} in {directory / INDEX_FILE} "
                f"(see `vpn pki list {directory}`)"
            )
        stamp = _now().isoformat(timespec="seconds")
        for entry in entries:
            if not entry.get("revoked"):
                entry["revoked"] = True
                entry["revoked_at"] = stamp
        _write_index(directory, index)
        return _write_crl_locked(directory, 30)


def write_crl(directory: Path, days: int = 30) -> Path:
    """(Re)write DIR/crl.pem from the index, valid for `days`; return its path."""
    directory = Path(directory)
    _load_ca(directory)
    with _locked(directory):
        return _write_crl_locked(directory, days)


def _write_crl_locked(directory: Path, days: int) -> Path:
    if days < 1:
        raise PkiError(f"CRL lifetime must be at least one day, not {days}")
    ca_cert, ca_key = _load_ca(directory)
    index = _read_index(directory)
    index["crl_number"] = int(index.get("crl_number", 0)) + 1
    now = _now()
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
    _write_index(directory, index)
    return path


def list_certs(directory: Path) -> list[dict[str, Any]]:
    """The index entries of `directory`, oldest first (name, kind, serial, not_after, revoked)."""
    directory = Path(directory)
    _load_ca(directory)
    return [dict(e) for e in _read_index(directory)["certs"]]


# -- a complete lab PKI ----------------------------------------------------------------------


def _cert_names(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(v).lower() for v in san.get_values_for_type(x509.DNSName)} | {
        str(v) for v in san.get_values_for_type(x509.IPAddress)
    }


def _cert_kind(cert: x509.Certificate) -> str | None:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return None
    if ExtendedKeyUsageOID.SERVER_AUTH in eku:
        return "server"
    if ExtendedKeyUsageOID.CLIENT_AUTH in eku:
        return "client"
    return None


def _ensure(
    directory: Path,
    name: str,
    kind: Kind,
    sans: Sequence[str] = (),
    common_name: str | None = None,
    **kwargs: Any,
) -> tuple[Path, Path]:
    """Issue NAME unless a matching pair from this directory's CA is already there."""
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    have = [p.exists() for p in (cert_path, key_path)]
    if kwargs.get("force") or not any(have):
        return issue(directory, name, kind, sans=sans, common_name=common_name, **kwargs)
    missing = cert_path if not have[0] else key_path
    if not all(have):
        raise PkiError(f"{missing} is missing; pass force=True / --force to re-create the lab PKI")
    cert = load_cert(cert_path)
    ca = load_cert(directory / CA_CERT)
    problem = None
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, TypeError, ValueError):
        problem = f"not signed by {directory / CA_CERT}"
    cn = common_name if common_name is not None else name
    subject_cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if problem is None and (not subject_cn or subject_cn[0].value != cn):
        problem = f"its common name is not {cn!r}"
    if problem is None and _cert_kind(cert) != kind:
        problem = f"it is not a {kind} certificate"
    wanted = {str(_general_name(s).value).lower() for s in ([cn] if kind == "server" else [])}
    wanted |= {str(_general_name(s).value).lower() for s in sans}
    if problem is None and not wanted <= _cert_names(cert):
        problem = f"it lacks the names {sorted(wanted - _cert_names(cert))}"
    if problem:
        raise PkiError(f"{cert_path} cannot be reused: {problem}; pass force=True / --force")
    return cert_path, key_path


def _ensure_ca(directory: Path, common_name: str, force: bool) -> None:
    have = [(directory / f).exists() for f in (CA_CERT, CA_KEY)]
    if force or not any(have):
        init_ca(directory, common_name=common_name, force=force)
    elif not all(have):
        missing = directory / (CA_KEY if have[0] else CA_CERT)
        raise PkiError(f"{missing} is missing; pass force=True / --force to re-create the CA")


def _refresh_crl(directory: Path) -> None:
    path = directory / CRL_FILE
    try:
        crl = x509.load_pem_x509_crl(path.read_bytes())
        fresh = crl.next_update_utc is not None and crl.next_update_utc - _now() > CRL_REFRESH
    except (OSError, ValueError):
        fresh = False
    if not fresh:
        write_crl(directory)


LAB_RESERVED = frozenset({"server", "expired", "revoked", "impostor", "dir", "crl", "rogue"})


def lab_pki(
    directory: Path,
    server_name: str = "gateway",
    server_sans: Sequence[str] = (),
    clients: Sequence[str] = ("client1", "client2", "client3"),
    force: bool = False,
) -> dict[str, Path]:
    """Everything a lab run needs, in one call; reuses what an earlier call made.

    Returned keys (certificate → its .crt path, "<key>.key" → its private key):

    - "dir": DIR; "ca", "ca.key": the lab CA; "crl": DIR/crl.pem (lists "revoked")
    - "server", "server.key": DIR/<server_name>.crt, CN and SAN server_name + server_sans
    - each client name, e.g. "client1", "client1.key": valid client certificates
    - "expired", "expired.key": a client certificate whose validity ended yesterday
    - "revoked", "revoked.key": a client certificate listed in the CRL
    - "impostor", "impostor.key": a server certificate from the lab CA for the name "impostor"
      (valid, but not for server_name: a client expecting server_name must refuse it)
    - "rogue_dir": DIR/rogue, a second, unrelated CA; "rogue_ca", "rogue_ca.key", "rogue_crl"
    - "rogue-client", "rogue-client.key": a client certificate from the rogue CA
    - "rogue-gateway", "rogue-gateway.key": a server certificate from the rogue CA carrying
      server_name and server_sans (a man in the middle posing as the gateway)

    With force, every file is made anew.
    """
    directory = Path(directory)
    check_name(server_name)
    for name in (server_name, *clients):
        check_name(name)
        if name in LAB_RESERVED or name.startswith("rogue"):
            raise PkiError(f"name {name!r} is used by the lab PKI itself; choose another")
    if server_name in clients:
        raise PkiError(f"{server_name!r} cannot be both the server and a client")
    directory.mkdir(parents=True, exist_ok=True)
    # One lab_pki at a time per directory: parallel test runs share one lab PKI.
    with _locked(directory, LAB_LOCK_FILE):
        return _lab_pki(directory, server_name, tuple(server_sans), tuple(clients), force)


def _lab_pki(
    directory: Path,
    server_name: str,
    server_sans: tuple[str, ...],
    clients: tuple[str, ...],
    force: bool,
) -> dict[str, Path]:
    rogue = directory / ROGUE_DIR
    out: dict[str, Path] = {"dir": directory, "rogue_dir": rogue}

    def record(key: str, pair: tuple[Path, Path]) -> None:
        out[key], out[f"{key}.key"] = pair

    _ensure_ca(directory, "vpnlab CA", force)
    out.update({"ca": directory / CA_CERT, "ca.key": directory / CA_KEY})
    record("server", _ensure(directory, server_name, "server", server_sans, force=force))
    for client in clients:
        record(client, _ensure(directory, client, "client", force=force))
    past = _now() - timedelta(days=1)
    record(
        "expired",
        _ensure(
            directory,
            "expired",
            "client",
            not_before=past - timedelta(days=30),
            not_after=past,
            force=force,
        ),
    )
    record("revoked", _ensure(directory, "revoked", "client", force=force))
    record("impostor", _ensure(directory, "impostor", "server", force=force))
    if not any(e["revoked"] for e in list_certs(directory) if e["name"] == "revoked"):
        revoke(directory, "revoked")
    _refresh_crl(directory)
    out["crl"] = directory / CRL_FILE

    _ensure_ca(rogue, "rogue CA", force)
    out.update({"rogue_ca": rogue / CA_CERT, "rogue_ca.key": rogue / CA_KEY})
    record("rogue-client", _ensure(rogue, "rogue-client", "client", force=force))
    record(
        "rogue-gateway",
        _ensure(
            rogue,
            "rogue-gateway",
            "server",
            server_sans,
            common_name=server_name,
            force=force,
        ),
    )
    _refresh_crl(rogue)
    out["rogue_crl"] = rogue / CRL_FILE
    return out
