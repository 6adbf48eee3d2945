"""`vpn pki lab`: every certificate a lab run needs, good and bad, made once and then reused."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vpn.credentials.ca import init_ca
from vpn.credentials.certificates import general_name, issue, list_certs
from vpn.credentials.crl import revoke, write_crl
from vpn.credentials.directory import (
    CA_CERT,
    CA_KEY,
    CRL_FILE,
    CRL_REFRESH,
    LAB_LOCK_FILE,
    ROGUE_DIR,
    Kind,
    check_name,
    load_cert,
    locked,
    make_directory,
    utc_now,
)
from vpn.errors import PkiError


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
    wanted = {str(general_name(s).value).lower() for s in ([cn] if kind == "server" else [])}
    wanted |= {str(general_name(s).value).lower() for s in sans}
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
        fresh = crl.next_update_utc is not None and crl.next_update_utc - utc_now() > CRL_REFRESH
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
    make_directory(directory)
    # One lab_pki at a time per directory: parallel test runs share one lab PKI.
    with locked(directory, LAB_LOCK_FILE):
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
    past = utc_now() - timedelta(days=1)
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
