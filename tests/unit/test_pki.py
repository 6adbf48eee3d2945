"""The certificate authority: what it issues must verify, keys stay private, nothing is lost."""

from __future__ import annotations

import argparse
import ipaddress
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import (
    DNSName,
    IPAddress,
    PolicyBuilder,
    Store,
    VerificationError,
)

from vpn.cli_pki import add_pki_parser
from vpn.credentials import pki


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def crl(path: Path) -> x509.CertificateRevocationList:
    return x509.load_pem_x509_crl(path.read_bytes())


def cn(c: x509.Certificate) -> str:
    return str(c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def verify_server(ca: Path, leaf: Path, name: str, when: datetime | None = None) -> None:
    builder = PolicyBuilder().store(Store([cert(ca)]))
    if when is not None:
        builder = builder.time(when)
    try:
        subject = IPAddress(ipaddress.ip_address(name))
    except ValueError:
        subject = DNSName(name)
    builder.build_server_verifier(subject).verify(cert(leaf), [])


def verify_client(ca: Path, leaf: Path, when: datetime | None = None) -> None:
    builder = PolicyBuilder().store(Store([cert(ca)]))
    if when is not None:
        builder = builder.time(when)
    builder.build_client_verifier().verify(cert(leaf), [])


def key_matches(key_path: Path, cert_path: Path) -> bool:
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    return key.public_key() == cert(cert_path).public_key()


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    pki.init_ca(tmp_path / "pki")
    return tmp_path / "pki"


# -- CA and certificates -------------------------------------------------------------------------


def test_ca_is_a_self_signed_ca_with_an_empty_crl(ca_dir: Path) -> None:
    ca = cert(ca_dir / "ca.crt")
    ca.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cn(ca) == "vpnlab CA"
    assert key_matches(ca_dir / "ca.key", ca_dir / "ca.crt")
    assert mode(ca_dir / "ca.key") == 0o600
    empty = crl(ca_dir / "crl.pem")
    assert empty.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    assert len(empty) == 0


def test_server_certificate_verifies_for_its_names_only(ca_dir: Path) -> None:
    crt, key = pki.issue(ca_dir, "gateway", "server", sans=["10.9.0.11", "vpn.example.org"])
    assert (crt, key) == (ca_dir / "gateway.crt", ca_dir / "gateway.key")
    assert mode(key) == 0o600 and key_matches(key, crt)
    for name in ("gateway", "10.9.0.11", "vpn.example.org"):
        verify_server(ca_dir / "ca.crt", crt, name)
    with pytest.raises(VerificationError):
        verify_server(ca_dir / "ca.crt", crt, "other")
    eku = cert(crt).extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert cn(cert(crt)) == "gateway"


def test_client_certificate_verifies_as_client_not_server(ca_dir: Path) -> None:
    crt, key = pki.issue(ca_dir, "alice", "client")
    assert mode(key) == 0o600 and key_matches(key, crt)
    verify_client(ca_dir / "ca.crt", crt)
    eku = cert(crt).extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    with pytest.raises(VerificationError):
        verify_server(ca_dir / "ca.crt", crt, "alice")


def test_certificates_from_another_ca_do_not_verify(ca_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    pki.init_ca(other, common_name="other CA")
    crt, _ = pki.issue(other, "gateway", "server")
    with pytest.raises(VerificationError):
        verify_server(ca_dir / "ca.crt", crt, "gateway")
    verify_server(other / "ca.crt", crt, "gateway")


def test_validity_in_the_past_gives_an_expired_certificate(ca_dir: Path) -> None:
    end = datetime.now(UTC) - timedelta(days=1)
    crt, _ = pki.issue(ca_dir, "old", "client", not_before=end - timedelta(days=10), not_after=end)
    assert cert(crt).not_valid_after_utc < datetime.now(UTC)
    with pytest.raises(VerificationError, match="not valid at validation time"):
        verify_client(ca_dir / "ca.crt", crt)
    cert(crt).verify_directly_issued_by(cert(ca_dir / "ca.crt"))  # only the dates are wrong
    assert cert(crt).not_valid_after_utc == end.replace(microsecond=0)
    assert cert(crt).not_valid_before_utc == (end - timedelta(days=10)).replace(microsecond=0)


def test_days_sets_the_end_date(ca_dir: Path) -> None:
    crt, _ = pki.issue(ca_dir, "short", "client", days=2)
    left = cert(crt).not_valid_after_utc - datetime.now(UTC)
    assert timedelta(days=1, hours=23) < left <= timedelta(days=2)


# -- no silent overwrite -------------------------------------------------------------------------


def test_existing_files_are_never_replaced_without_force(ca_dir: Path) -> None:
    crt, key = pki.issue(ca_dir, "bob", "client")
    before = crt.read_bytes(), key.read_bytes()
    with pytest.raises(pki.PkiError, match=r"exists; pass force=True / --force to replace it"):
        pki.issue(ca_dir, "bob", "client")
    assert (crt.read_bytes(), key.read_bytes()) == before
    ca_before = (ca_dir / "ca.key").read_bytes()
    with pytest.raises(pki.PkiError, match="exists; pass force=True"):
        pki.init_ca(ca_dir)
    assert (ca_dir / "ca.key").read_bytes() == ca_before

    pki.issue(ca_dir, "bob", "client", force=True)
    assert key.read_bytes() != before[1] and key_matches(key, crt)
    assert mode(key) == 0o600
    assert not [p for p in ca_dir.iterdir() if p.name.endswith(".tmp")]


def test_a_stray_key_file_alone_blocks_issuing(ca_dir: Path) -> None:
    (ca_dir / "carol.key").write_text("mine\n")
    with pytest.raises(pki.PkiError, match=r"carol\.key exists"):
        pki.issue(ca_dir, "carol", "client")
    assert (ca_dir / "carol.key").read_text() == "mine\n"
    assert not (ca_dir / "carol.crt").exists()


@pytest.mark.parametrize("name", ["", "ca", "../evil", "a b", "x" * 65, "-dash", ".hidden"])
def test_bad_names_are_refused(ca_dir: Path, name: str) -> None:
    with pytest.raises(pki.PkiError, match="invalid certificate name"):
        pki.issue(ca_dir, name, "client")


@pytest.mark.parametrize("san", ["bad name", "IP:gateway", "xn--/", "a..b"])
def test_bad_sans_are_refused(ca_dir: Path, san: str) -> None:
    with pytest.raises(pki.PkiError, match="subjectAltName"):
        pki.issue(ca_dir, "gw", "server", sans=[san])
    assert not (ca_dir / "gw.key").exists()


def test_issue_without_ca_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(pki.PkiError, match="vpn pki init"):
        pki.issue(tmp_path, "gw", "server")


# -- revocation ----------------------------------------------------------------------------------


def test_revoke_puts_the_serial_in_a_signed_crl(ca_dir: Path) -> None:
    crt, _ = pki.issue(ca_dir, "mallory", "client")
    keep, _ = pki.issue(ca_dir, "alice", "client")
    number_before = crl(ca_dir / "crl.pem").extensions.get_extension_for_class(x509.CRLNumber)
    path = pki.revoke(ca_dir, "mallory")
    assert path == ca_dir / "crl.pem"
    revoked = crl(path)
    assert revoked.is_signature_valid(cert(ca_dir / "ca.crt").public_key())  # type: ignore[arg-type]
    assert revoked.get_revoked_certificate_by_serial_number(cert(crt).serial_number) is not None
    assert revoked.get_revoked_certificate_by_serial_number(cert(keep).serial_number) is None
    number = revoked.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert number > number_before.value.crl_number
    entries = {e["name"]: e for e in pki.list_certs(ca_dir)}
    assert entries["mallory"]["revoked"] and not entries["alice"]["revoked"]
    assert entries["mallory"]["serial"] == format(cert(crt).serial_number, "x")


def test_write_crl_keeps_revocations_and_sets_lifetime(ca_dir: Path) -> None:
    crt, _ = pki.issue(ca_dir, "mallory", "client")
    pki.revoke(ca_dir, "mallory")
    fresh = crl(pki.write_crl(ca_dir, days=3))
    assert fresh.get_revoked_certificate_by_serial_number(cert(crt).serial_number) is not None
    assert fresh.next_update_utc is not None
    assert fresh.next_update_utc - datetime.now(UTC) <= timedelta(days=3)


def test_revoking_an_unknown_name_fails(ca_dir: Path) -> None:
    with pytest.raises(pki.PkiError, match="no certificate named 'nobody'"):
        pki.revoke(ca_dir, "nobody")


# -- the lab PKI -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return pki.lab_pki(tmp_path_factory.mktemp("lab"), server_sans=("10.9.0.11",))


def test_lab_pki_is_complete(lab: dict[str, Path]) -> None:
    root = lab["dir"]
    expected = {"dir", "rogue_dir", "ca", "ca.key", "crl", "rogue_ca", "rogue_ca.key", "rogue_crl"}
    for name in ("server", "client1", "client2", "client3", "expired", "revoked", "impostor"):
        expected |= {name, f"{name}.key"}
    expected |= {"rogue-client", "rogue-client.key", "rogue-gateway", "rogue-gateway.key"}
    assert set(lab) == expected
    for key, path in lab.items():
        assert path.exists(), key
        if key.endswith(".key"):
            assert mode(path) == 0o600, key
            assert key_matches(path, lab[key.removesuffix(".key")]), key
    assert lab["server"] == root / "gateway.crt"
    assert lab["rogue_dir"] == root / "rogue" and lab["rogue_ca"] == root / "rogue" / "ca.crt"


def test_lab_pki_certificates_have_the_roles_the_tests_need(lab: dict[str, Path]) -> None:
    ca, rogue_ca = lab["ca"], lab["rogue_ca"]
    verify_server(ca, lab["server"], "gateway")
    verify_server(ca, lab["server"], "10.9.0.11")
    for client in ("client1", "client2", "client3", "revoked"):
        verify_client(ca, lab[client])
    with pytest.raises(VerificationError, match="not valid at validation time"):
        verify_client(ca, lab["expired"])
    # the impostor: the lab CA vouches for it, but for another name
    verify_server(ca, lab["impostor"], "impostor")
    with pytest.raises(VerificationError):
        verify_server(ca, lab["impostor"], "gateway")
    # the rogue gateway: the right name, the wrong CA
    assert cn(cert(lab["rogue-gateway"])) == "gateway"
    verify_server(rogue_ca, lab["rogue-gateway"], "gateway")
    with pytest.raises(VerificationError):
        verify_server(ca, lab["rogue-gateway"], "gateway")
    verify_client(rogue_ca, lab["rogue-client"])
    with pytest.raises(VerificationError):
        verify_client(ca, lab["rogue-client"])
    # the CRL lists exactly the revoked one
    listed = crl(lab["crl"])
    assert [r.serial_number for r in listed] == [cert(lab["revoked"]).serial_number]


def test_lab_pki_again_reuses_everything(lab: dict[str, Path]) -> None:
    contents = {k: p.read_bytes() for k, p in lab.items() if p.is_file()}
    again = pki.lab_pki(lab["dir"], server_sans=("10.9.0.11",))
    assert again == lab
    assert {k: p.read_bytes() for k, p in again.items() if p.is_file()} == contents


def test_lab_pki_adds_missing_clients_and_refuses_mismatches(tmp_path: Path) -> None:
    first = pki.lab_pki(tmp_path, clients=("client1",))
    ca_bytes = first["ca"].read_bytes()
    more = pki.lab_pki(tmp_path, clients=("client1", "dave"))
    assert more["dave"] == tmp_path / "dave.crt" and more["ca"].read_bytes() == ca_bytes
    verify_client(more["ca"], more["dave"])

    with pytest.raises(pki.PkiError, match=r"gateway.crt cannot be reused.*force"):
        pki.lab_pki(tmp_path, server_sans=("10.9.0.11",))
    (tmp_path / "client1.key").unlink()
    with pytest.raises(pki.PkiError, match=r"client1\.key is missing"):
        pki.lab_pki(tmp_path)

    fresh = pki.lab_pki(tmp_path, server_sans=("10.9.0.11",), force=True)
    assert fresh["ca"].read_bytes() != ca_bytes
    verify_server(fresh["ca"], fresh["server"], "10.9.0.11")
    verify_client(fresh["ca"], fresh["client1"])
    assert len(crl(fresh["crl"])) == 1


def test_lab_pki_called_in_parallel_makes_one_pki(tmp_path: Path) -> None:
    results: list[dict[str, Path]] = []
    errors: list[BaseException] = []

    def make() -> None:
        try:
            results.append(pki.lab_pki(tmp_path / "shared", clients=("c1",)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=make) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and len(results) == 3
    assert results[0] == results[1] == results[2]
    verify_client(results[0]["ca"], results[0]["c1"])
    assert [e["name"] for e in pki.list_certs(tmp_path / "shared")].count("c1") == 1


def test_lab_pki_refuses_names_it_uses_itself(tmp_path: Path) -> None:
    with pytest.raises(pki.PkiError, match="used by the lab PKI"):
        pki.lab_pki(tmp_path, clients=("expired",))
    with pytest.raises(pki.PkiError, match="both the server and a client"):
        pki.lab_pki(tmp_path, clients=("gateway",))


# -- vpn pki -----------------------------------------------------------------------------------


@pytest.fixture
def vpn_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vpn")
    add_pki_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def run(parser: argparse.ArgumentParser, *argv: str) -> int:
    args = parser.parse_args(["pki", *argv])
    return args.func(args)


def test_cli_init_issue_revoke_list(
    vpn_parser: argparse.ArgumentParser, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = str(tmp_path / "pki")
    assert run(vpn_parser, "init", d, "--cn", "Test CA", "--days", "30") == 0
    assert cn(cert(tmp_path / "pki" / "ca.crt")) == "Test CA"
    assert run(vpn_parser, "issue", d, "gw", "--server", "--san", "10.0.0.1") == 0
    assert run(vpn_parser, "issue", d, "eve", "--client", "--days", "5") == 0
    verify_server(tmp_path / "pki" / "ca.crt", tmp_path / "pki" / "gw.crt", "10.0.0.1")
    assert run(vpn_parser, "revoke", d, "eve") == 0
    assert run(vpn_parser, "crl", d) == 0
    capsys.readouterr()
    assert run(vpn_parser, "list", d) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "KIND", "SERIAL", "NOT-AFTER", "REVOKED"]
    gw, eve = (line.split() for line in lines[1:])
    assert gw[:2] == ["gw", "server"] and gw[-1] == "no"
    assert eve[:2] == ["eve", "client"] and eve[-1] != "no"


def test_cli_errors_are_one_line_and_status_2(
    vpn_parser: argparse.ArgumentParser, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = str(tmp_path)
    assert run(vpn_parser, "issue", d, "gw", "--server") == 2
    err = capsys.readouterr().err
    assert err.startswith("vpn pki: error: ") and "vpn pki init" in err and err.count("\n") == 1
    assert run(vpn_parser, "init", d) == 0
    assert run(vpn_parser, "init", d) == 2
    assert "--force" in capsys.readouterr().err
    assert run(vpn_parser, "init", d, "--force") == 0
    with pytest.raises(SystemExit):  # exactly one of --server / --client
        vpn_parser.parse_args(["pki", "issue", d, "x"])


def test_cli_lab_prints_every_path(
    vpn_parser: argparse.ArgumentParser, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["lab", str(tmp_path), "--server-name", "gw", "--san", "10.9.0.11", "--client", "c9"]
    assert run(vpn_parser, *argv) == 0
    out = dict(line.split() for line in capsys.readouterr().out.splitlines())
    assert out["server"] == str(tmp_path / "gw.crt") and out["c9"] == str(tmp_path / "c9.crt")
    assert "client1" not in out
    verify_server(tmp_path / "ca.crt", tmp_path / "gw.crt", "10.9.0.11")
    assert run(vpn_parser, *argv) == 0  # again: reused


def test_cli_every_option_states_its_default(vpn_parser: argparse.ArgumentParser) -> None:
    pki_parser = vpn_parser._subparsers._group_actions[0].choices["pki"]  # type: ignore[union-attr]
    verbs = pki_parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert set(verbs) == {"init", "issue", "revoke", "crl", "lab", "list"}
    for name, sub in verbs.items():
        for action in sub._actions:
            if action.option_strings and action.dest not in ("help", "server", "client"):
                assert "default" in (action.help or ""), f"pki {name} {action.option_strings}"
