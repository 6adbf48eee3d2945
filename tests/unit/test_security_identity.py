"""Identity and revocation without a network: log escaping, re-issue revokes, the CRL watcher,
the identity rule and `kill` (see docs/security.md)."""

from __future__ import annotations

import io
import logging
import ssl
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from vpn import cli, log
from vpn.credentials import pki, tls
from vpn.errors import ControlError
from vpn.protocol import MsgType
from vpn.server import identity
from vpn.server.revocation import CrlWatcher


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


@pytest.fixture
def lab(tmp_path: Path) -> dict[str, Path]:
    return pki.lab_pki(tmp_path / "pki", clients=("client1", "client2"))


# -- 9: control characters in log values ---------------------------------------------------------


def test_log_values_with_control_characters_stay_one_line_and_escaped() -> None:
    stream = io.StringIO()
    log.setup("info")
    handler = logging.getLogger("vpn").handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    hostile = "evil\r\x1b[31mred\x00nul\u2028sep\u2029par\x7fdel\x85nel\nevent=connect"
    log.warn("auth_failed", identity=hostile, reason="a\tb")
    text = stream.getvalue()
    assert text.endswith("\n") and text.count("\n") == 1, repr(text)
    line = text[:-1]
    bad = [c for c in line if ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c in "\u2028\u2029"]
    assert bad == [], repr(line)
    assert "\\x1b[31m" in line and "\\x0d" in line and "\\x00" in line and "\\u2028" in line
    assert 'identity="evil' in line  # quoted: the forged "event=connect" stays inside the value
    assert line.count(" event=") == 1


def test_log_plain_values_are_unchanged() -> None:
    assert log._quote("client1") == "client1"
    assert log._quote("a b") == '"a b"'
    assert log._quote('say "hi"') == '"say \\"hi\\""'


# -- 5: re-issuing revokes the old certificate ---------------------------------------------------


def test_issue_force_revokes_the_old_certificate(lab: dict[str, Path]) -> None:
    old = cert(lab["client1"]).serial_number
    parser = cli.build_parser()
    args = parser.parse_args(["pki", "issue", str(lab["dir"]), "client1", "--client", "--force"])
    assert args.func(args) == 0
    new = cert(lab["client1"]).serial_number
    assert new != old
    crl = x509.load_pem_x509_crl(lab["crl"].read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(old) is not None
    assert crl.get_revoked_certificate_by_serial_number(new) is None
    entries = {e["serial"]: e for e in pki.list_certs(lab["dir"]) if e["name"] == "client1"}
    assert entries[format(old, "x")]["revoked"] and not entries[format(new, "x")]["revoked"]


# -- 10: a broken CRL at reload --------------------------------------------------------------------


def _watcher(lab: dict[str, Path]) -> CrlWatcher:
    def build() -> ssl.SSLContext:
        return tls.server_context(lab["server"], lab["server.key"], lab["ca"], lab["crl"])

    return CrlWatcher(lab["crl"], lab["ca"], build)


def test_broken_crl_keeps_the_old_one_and_is_logged_once(lab: dict[str, Path]) -> None:
    watcher = _watcher(lab)
    revoked = cert(lab["revoked"]).serial_number
    context, before = watcher.context, watcher.revoked
    assert revoked in before
    lab["crl"].write_bytes(b"-----BEGIN X509 CRL-----\ngarbage\n-----END X509 CRL-----\n")
    records: list[logging.LogRecord] = []
    catcher = logging.Handler()
    catcher.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("vpn")
    logger.addHandler(catcher)
    try:
        for _ in range(5):  # the poll of every second, and every handshake
            assert watcher.poll() is False
    finally:
        logger.removeHandler(catcher)
    assert watcher.context is context and watcher.revoked == before
    lines = [r for r in records if r.getMessage() == "crl_unreadable"]
    assert len(lines) == 1, records
    fields: dict[str, Any] = lines[0].fields  # type: ignore[attr-defined]
    assert "previous CRL stays" in fields["action"]
    pki.revoke(lab["dir"], "client1")  # a good CRL again: it takes effect
    assert watcher.poll() is True
    assert cert(lab["client1"]).serial_number in watcher.revoked


def test_crl_signed_by_another_ca_is_refused_at_reload(lab: dict[str, Path]) -> None:
    watcher = _watcher(lab)
    lab["crl"].write_bytes(lab["rogue_crl"].read_bytes())
    assert watcher.poll() is False
    assert cert(lab["revoked"]).serial_number in watcher.revoked


# -- 4/5: the identity rule, and kill ------------------------------------------------------------


class FakeSock:
    def __init__(self, path: Path) -> None:
        self.der = cert(path).public_bytes(serialization.Encoding.DER)

    def getpeercert(self, binary_form: bool = False) -> bytes:
        return self.der


class FakeSession(SimpleNamespace):
    def close(self, reason: str, **kw: Any) -> None:
        self.closed = True
        self.reason, self.kw = reason, kw


def session(path: Path, name: str = "client1", peer: str = "10.0.0.1:1") -> Any:
    return FakeSession(
        identity=name, peer=peer, sock=FakeSock(path), serial=0, fingerprint="", closed=False
    )


def table_with(*sessions: Any) -> Any:
    return SimpleNamespace(by_identity={s.identity: s for s in sessions})


def test_same_certificate_replaces_other_certificate_is_refused(
    lab: dict[str, Path], tmp_path: Path
) -> None:
    live = session(lab["client1"])
    assert identity.bind(table_with(), live, frozenset()) is None
    assert live.fingerprint == cert(lab["client1"]).fingerprint(hashes.SHA256()).hex()

    again = session(lab["client1"], peer="10.0.0.2:2")
    assert identity.bind(table_with(live), again, frozenset()) is None
    assert live.closed and "replaced by a new connection" in live.reason
    assert live.kw["kind"] == MsgType.BYE

    twin, _ = pki.issue(lab["dir"], "client1-twin", "client", common_name="client1")
    other = session(twin, peer="10.0.0.3:3")
    reason = identity.bind(table_with(again), other, frozenset())
    assert reason == (
        f"identity client1 is connected with another certificate (serial {again.serial:x})"
    )
    assert not again.closed


def test_revoked_serial_is_refused_at_hello_and_ended_when_live(lab: dict[str, Path]) -> None:
    one, two = session(lab["client1"]), session(lab["client2"], "client2")
    for s in (one, two):
        identity.bind(table_with(), s, frozenset())
    assert identity.end_revoked([one, two], frozenset({one.serial})) == 1
    assert one.closed and one.reason == f"certificate revoked (serial {one.serial:x})"
    assert one.kw == {"retry": False} and not two.closed
    late = session(lab["client1"])
    assert identity.bind(table_with(), late, frozenset({one.serial})) == one.reason


def test_kill_ends_one_session_and_names_the_missing_one(lab: dict[str, Path]) -> None:
    one, two = session(lab["client1"]), session(lab["client2"], "client2")
    for s in (one, two):
        s.address = None
    table = table_with(one, two)
    answer = identity.kill(table, {"cmd": "kill", "identity": "client1"})
    assert answer["ok"] and answer["killed"] == "client1"
    assert one.closed and one.kw == {"retry": False} and not two.closed
    with pytest.raises(ControlError, match=r"no session for identity 'ghost' \(connected: "):
        identity.kill(table, {"cmd": "kill", "identity": "ghost"})
    with pytest.raises(ControlError, match="kill needs"):
        identity.kill(table, {"cmd": "kill"})
