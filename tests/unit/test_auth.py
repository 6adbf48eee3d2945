"""The scrypt password file and `vpn passwd`."""

from __future__ import annotations

import argparse
import base64
import io
import os
import pty
import select
import stat
import sys
import time
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vpn.cli_pki import add_passwd_parser
from vpn.credentials import passwords
from vpn.credentials.passwords import PasswordFile, hash_password, verify_password
from vpn.errors import AuthError

# The format, set/remove and `vpn passwd` tests hash at a tiny scrypt cost; the few marked
# real_scrypt check the production parameters and the timing of a refusal.
pytestmark = pytest.mark.usefixtures("cheap_scrypt")


@pytest.mark.real_scrypt
def test_hash_has_the_documented_form_and_verifies() -> None:
    assert (passwords.SCRYPT_N, passwords.SCRYPT_R, passwords.SCRYPT_P) == (2**17, 8, 1)
    encoded = hash_password("correct horse")
    scheme, n, r, p, salt, digest = encoded.split("$")
    assert (scheme, n, r, p) == ("scrypt", str(2**17), "8", "1")
    assert len(salt) == 24 and len(digest) == 44  # base64 of 16 and 32 bytes
    assert verify_password("correct horse", encoded)
    assert not verify_password("correct horsE", encoded)
    assert not verify_password("", encoded)


def test_same_password_gets_a_new_salt_each_time() -> None:
    assert hash_password("x") != hash_password("x")


def test_malformed_encodings_do_not_verify() -> None:
    good = hash_password("pw")
    other_hash = good.rsplit("$", 1)[0] + "$" + "A" * 43 + "="
    for bad in ("", "pw", good.replace("scrypt", "bcrypt"), other_hash, "scrypt$3$8$1$AA$AA"):
        assert not verify_password("pw", bad)


@settings(max_examples=12, deadline=None)
@given(st.text(max_size=200), st.text(max_size=200))
def test_any_password_round_trips(password: str, other: str) -> None:
    # What is under test is the encoding of any text, not the cost: a small N keeps it quick.
    with mock.patch.object(passwords, "SCRYPT_N", 2**10):
        encoded = hash_password(password)
    assert encoded.startswith(f"scrypt${2**10}$")
    assert verify_password(password, encoded)
    assert verify_password(other, encoded) == (other == password)


@pytest.fixture
def pwfile(tmp_path: Path) -> Path:
    path = tmp_path / "passwd"
    PasswordFile.set(path, "alice", "wonderland")
    PasswordFile.set(path, "bob@lab", "builder")
    return path


def test_check_accepts_right_and_refuses_wrong_or_unknown(pwfile: Path) -> None:
    users = PasswordFile.load(pwfile)
    assert users.users == ["alice", "bob@lab"]
    assert users.check("alice", "wonderland")
    assert users.check("bob@lab", "builder")
    assert not users.check("alice", "builder")
    assert not users.check("carol", "wonderland")
    assert not users.check("", "")


@pytest.mark.real_scrypt
def test_unknown_user_costs_as_much_as_a_known_one(pwfile: Path) -> None:
    """An attacker must not learn which names exist from how fast a refusal comes."""
    users = PasswordFile.load(pwfile)

    def cost(user: str) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            assert not users.check(user, "wrong")
            times.append(time.perf_counter() - start)
        return sorted(times)[1]

    known, unknown = cost("alice"), cost("nobody")
    assert 0.4 < unknown / known < 2.5, (known, unknown)
    assert unknown > 0.005, "no scrypt work was done for the unknown user"


def test_set_and_remove_round_trip_keep_comments_and_mode(pwfile: Path) -> None:
    assert stat.S_IMODE(pwfile.stat().st_mode) == 0o600
    text = "# lab users\n\n" + pwfile.read_text()
    pwfile.write_text(text)
    PasswordFile.set(pwfile, "alice", "new secret")
    users = PasswordFile.load(pwfile)
    assert users.check("alice", "new secret") and not users.check("alice", "wonderland")
    assert pwfile.read_text().startswith("# lab users\n\nalice:scrypt$")
    assert stat.S_IMODE(pwfile.stat().st_mode) == 0o600
    PasswordFile.remove(pwfile, "alice")
    users = PasswordFile.load(pwfile)
    assert users.users == ["bob@lab"] and not users.check("alice", "new secret")
    assert "# lab users" in pwfile.read_text()
    with pytest.raises(AuthError, match="no user 'alice'"):
        PasswordFile.remove(pwfile, "alice")
    assert not [p for p in pwfile.parent.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("alice", "no ':' found"),
        ("al ice:scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 44, "invalid user name"),
        ("x" * 65 + ":scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 44, "invalid user"),
        ("alice:bcrypt$16384$8$1$AAAA$AAAA", "expected scrypt"),
        ("alice:scrypt$1000$8$1$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 44, "power of two"),
        ("alice:scrypt$1073741824$8$1$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 44, "power of two"),
        ("alice:scrypt$16384$8$1$not-base64!$" + "A" * 44, "base64"),
        ("alice:scrypt$16384$x$1$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 44, "integers"),
        ("alice:" + "A" * 600, "longer than"),
    ],
)
def test_malformed_line_is_named_by_file_and_line(tmp_path: Path, line: str, why: str) -> None:
    path = tmp_path / "passwd"
    good = f"bob:{hash_password('pw')}"
    path.write_text(f"# users\n{good}\n\n{line}\n")
    with pytest.raises(AuthError) as info:
        PasswordFile.load(path)
    assert f"{path}:4:" in str(info.value) and why in str(info.value)
    with pytest.raises(AuthError, match=f"{path}:4:"):
        PasswordFile.set(path, "carol", "pw")  # a broken file is not rewritten
    assert path.read_text() == f"# users\n{good}\n\n{line}\n"


def test_duplicate_user_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    with pytest.raises(AuthError, match=r"no such password file.*vpn passwd"):
        PasswordFile.load(path)
    entry = f"bob:{hash_password('pw')}"
    path.write_text(f"{entry}\n{entry}\n")
    with pytest.raises(AuthError, match=f"{path}:2: user 'bob' appears twice"):
        PasswordFile.load(path)


def test_invalid_names_and_empty_password_are_refused(tmp_path: Path) -> None:
    with pytest.raises(AuthError, match="invalid user name"):
        PasswordFile.set(tmp_path / "p", "no spaces", "pw")
    with pytest.raises(AuthError, match="empty password"):
        PasswordFile.set(tmp_path / "p", "bob", "")
    assert not (tmp_path / "p").exists()


# -- vpn passwd --------------------------------------------------------------------------------


def run_passwd(argv: list[str], monkeypatch: pytest.MonkeyPatch, stdin: str = "") -> int:
    parser = argparse.ArgumentParser(prog="vpn")
    add_passwd_parser(parser.add_subparsers(dest="command", required=True))
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    args = parser.parse_args(["passwd", *argv])
    return args.func(args)


def test_passwd_command_adds_changes_and_deletes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "passwd"
    status = run_passwd([str(path), "alice", "--password-stdin"], monkeypatch, "s3cret\n")
    assert status == 0 and PasswordFile.load(path).check("alice", "s3cret")
    assert "added 'alice'" in capsys.readouterr().out
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600

    status = run_passwd([str(path), "alice", "--password-stdin"], monkeypatch, "other\n")
    assert status == 0 and PasswordFile.load(path).check("alice", "other")
    assert "changed 'alice'" in capsys.readouterr().out

    status = run_passwd([str(path), "alice", "--delete"], monkeypatch)
    assert status == 0 and "alice" not in PasswordFile.load(path)

    status = run_passwd([str(path), "alice", "--delete"], monkeypatch)
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("vpn passwd: error: ") and "no user 'alice'" in err
    assert err.count("\n") == 1


def passwd_on_terminal(path: Path, user: str, answers: list[str]) -> tuple[int, str]:
    """Run `vpn passwd` in a child whose controlling terminal is a pty; answer its prompts.

    Returns the exit status and everything the terminal showed.
    """
    code = (
        "import argparse, sys\n"
        "from vpn.cli_pki import add_passwd_parser\n"
        "p = argparse.ArgumentParser(prog='vpn')\n"
        "add_passwd_parser(p.add_subparsers(dest='command', required=True))\n"
        "a = p.parse_args(sys.argv[1:])\n"
        "sys.exit(a.func(a))\n"
    )
    root = str(Path(__file__).resolve().parents[2])
    pid, fd = pty.fork()
    if pid == 0:  # the child: its stdin/stdout/stderr and /dev/tty are the pty
        os.environ["PYTHONPATH"] = root
        os.execv(sys.executable, [sys.executable, "-c", code, "passwd", str(path), user])
    shown = b""
    pending = list(answers)
    deadline = time.monotonic() + 10
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 1024)
            except OSError:  # EIO: the child has exited and closed the terminal
                break
            if not chunk:
                break
            shown += chunk
            prompts = shown.count(b"password:")
            if pending and prompts > len(answers) - len(pending):  # a new prompt
                os.write(fd, pending.pop(0).encode() + b"\n")
    finally:
        os.close(fd)
        _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), shown.decode(errors="replace")


@pytest.mark.real_scrypt  # the child process hashes at the production cost
def test_passwd_command_asks_twice_on_the_terminal(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    status, shown = passwd_on_terminal(path, "alice", ["first-try", "second-try"])
    assert status == 2, shown
    assert "New password:" in shown and "Repeat password:" in shown
    assert "vpn passwd: error: the passwords do not match" in shown
    assert "first-try" not in shown, "the password must not be echoed"
    assert not path.exists()

    status, shown = passwd_on_terminal(path, "alice", ["same-secret", "same-secret"])
    assert status == 0, shown
    assert "same-secret" not in shown
    assert PasswordFile.load(path).check("alice", "same-secret")


def test_passwd_command_refuses_empty_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    status = run_passwd([str(tmp_path / "p"), "bob", "--password-stdin"], monkeypatch, "\n")
    assert status == 2 and "empty password" in capsys.readouterr().err


def test_passwd_has_no_password_option() -> None:
    parser = argparse.ArgumentParser(prog="vpn")
    add_passwd_parser(parser.add_subparsers(dest="command", required=True))
    with pytest.raises(SystemExit):
        parser.parse_args(["passwd", "f", "alice", "--password", "x"])


@pytest.mark.parametrize("position", [0, 15, 16, 31])
def test_every_byte_of_the_hash_counts(position: int) -> None:
    """One byte changed anywhere in the stored hash — first, middle or last — must not verify:
    a comparison of only part of it would let a near miss through."""
    with mock.patch.object(passwords, "SCRYPT_N", 2**10):
        encoded = hash_password("pw")
    head, digest_b64 = encoded.rsplit("$", 1)
    digest = bytearray(base64.b64decode(digest_b64))
    assert len(digest) == 32
    digest[position] ^= 0x01
    tampered = f"{head}${base64.b64encode(bytes(digest)).decode()}"
    assert verify_password("pw", encoded)
    assert not verify_password("pw", tampered)


def test_the_salt_and_parameters_of_the_line_are_used() -> None:
    with mock.patch.object(passwords, "SCRYPT_N", 2**10):
        encoded = hash_password("pw")
    scheme, n, r, p, salt, digest = encoded.split("$")
    other_salt = base64.b64encode(bytes(16)).decode()
    assert not verify_password("pw", "$".join([scheme, n, r, p, other_salt, digest]))
    assert not verify_password("pw", "$".join([scheme, str(2**11), r, p, salt, digest]))
    assert not verify_password("pw", "$".join([scheme, n, "2", p, salt, digest]))
    assert not verify_password("pw", "$".join([scheme, n, r, "2", salt, digest]))
