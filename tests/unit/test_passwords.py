"""The password file's rewrites — the upgrade of an old hash at login, `set` and `remove` — line
by line, and the production scrypt parameters the cheap tests leave aside.

Most tests hash at a tiny cost (`cheap_scrypt`, tests/unit/conftest.py): what they check is the
file, not the cost. An "old" hash is one made with other parameters than today's."""

from __future__ import annotations

import base64
import errno
import stat
from pathlib import Path
from typing import Any

import pytest

from vpn import log
from vpn.credentials import passwords
from vpn.credentials.passwords import PasswordFile, hash_password, needs_upgrade, verify_password
from vpn.errors import AuthError

pytestmark = pytest.mark.usefixtures("cheap_scrypt")


def made_with(password: str, n: int, r: int = 8, p: int = 1, salt: bytes = b"saltsaltsalt") -> str:
    digest = passwords._scrypt(password, salt, n, r, p, 32)
    return f"scrypt${n}${r}${p}${passwords._b64(salt)}${passwords._b64(digest)}"


@pytest.fixture
def logged(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, dict[str, Any]]]:
    """Every log.event / log.warn call, as (function, event name, fields)."""
    calls: list[tuple[str, str, dict[str, Any]]] = []
    monkeypatch.setattr(log, "event", lambda name, *a, **kw: calls.append(("event", name, kw)))
    monkeypatch.setattr(log, "warn", lambda name, **kw: calls.append(("warn", name, kw)))
    return calls


OLD_ALICE = made_with("correct horse", 2**3)
OLD_CAROL = made_with("carol's", 2**3, r=2)


@pytest.fixture
def old_file(tmp_path: Path) -> Path:
    """Comments, blank lines, a current hash (bob) and two old ones (alice, carol)."""
    path = tmp_path / "passwd"
    bob = f"bob:{hash_password('builder')}"
    path.write_text(
        f"# lab users\n\n{bob}\n  # indented comment\nalice:{OLD_ALICE}\ncarol:{OLD_CAROL}\n# end\n"
    )
    path.chmod(0o644)
    return path


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines()


# -- the upgrade at login -------------------------------------------------------------------


def test_an_old_hash_is_rewritten_in_place_and_nothing_else_moves(
    old_file: Path, cheap_scrypt: int, logged: list[tuple[str, str, dict[str, Any]]]
) -> None:
    before = lines_of(old_file)
    users = PasswordFile.load(old_file)
    assert users.check("alice", "correct horse")
    after = lines_of(old_file)
    assert len(after) == len(before) == 7
    assert after[:4] == before[:4] and after[5:] == before[5:]
    user, _, new = after[4].partition(":")
    assert user == "alice" and new != OLD_ALICE
    assert new.startswith(f"scrypt${cheap_scrypt}$8$1$") and not needs_upgrade(new)
    assert verify_password("correct horse", new) and not verify_password("wrong", new)
    assert old_file.read_text().endswith("# end\n")
    assert stat.S_IMODE(old_file.stat().st_mode) == 0o600
    assert not [p.name for p in old_file.parent.iterdir() if p.name != "passwd"]
    assert logged == [
        ("event", "password_upgraded", {"path": str(old_file), "user": "alice", "n": cheap_scrypt})
    ]
    # The loaded file now holds the new hash: the next login verifies it and rewrites nothing.
    assert users._users["alice"] == new
    assert users.check("alice", "correct horse") and not users.check("alice", "wrong")
    assert lines_of(old_file) == after and len(logged) == 1
    assert PasswordFile.load(old_file).check("alice", "correct horse")


def test_a_failed_login_or_a_current_hash_rewrites_nothing(
    old_file: Path, logged: list[tuple[str, str, dict[str, Any]]]
) -> None:
    text = old_file.read_text()
    users = PasswordFile.load(old_file)
    assert not users.check("alice", "wrong") and not users.check("nobody", "correct horse")
    assert users.check("bob", "builder")
    assert old_file.read_text() == text and logged == []
    assert stat.S_IMODE(old_file.stat().st_mode) == 0o644, "the file was not rewritten"


def test_each_user_is_upgraded_on_their_own_login(
    old_file: Path, logged: list[tuple[str, str, dict[str, Any]]]
) -> None:
    users = PasswordFile.load(old_file)
    assert users.check("carol", "carol's")
    lines = lines_of(old_file)
    assert lines[4] == f"alice:{OLD_ALICE}" and lines[5] == f"carol:{users._users['carol']}"
    assert users.check("alice", "correct horse")
    lines = lines_of(old_file)
    assert lines[4] == f"alice:{users._users['alice']}"
    assert lines[5] == f"carol:{users._users['carol']}"
    assert [(name, fields["user"]) for _, name, fields in logged] == [
        ("password_upgraded", "carol"),
        ("password_upgraded", "alice"),
    ]


def test_a_line_changed_on_disk_since_the_load_wins(
    old_file: Path, logged: list[tuple[str, str, dict[str, Any]]]
) -> None:
    users = PasswordFile.load(old_file)
    PasswordFile.set(old_file, "alice", "changed meanwhile")
    text = old_file.read_text()
    assert users.check("alice", "correct horse"), "the loaded hash still logs in"
    assert old_file.read_text() == text and logged == []
    assert users._users["alice"] == OLD_ALICE
    assert PasswordFile.load(old_file).check("alice", "changed meanwhile")


def test_a_user_removed_on_disk_since_the_load_is_not_written_back(
    old_file: Path, logged: list[tuple[str, str, dict[str, Any]]]
) -> None:
    users = PasswordFile.load(old_file)
    PasswordFile.remove(old_file, "alice")
    text = old_file.read_text()
    assert users.check("alice", "correct horse")
    assert old_file.read_text() == text and "alice" not in text and logged == []


def test_a_file_that_cannot_be_rewritten_is_logged_and_the_login_succeeds(
    old_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    logged: list[tuple[str, str, dict[str, Any]]],
) -> None:
    users = PasswordFile.load(old_file)
    text = old_file.read_text()

    def read_only(path: Path, lines: list[str]) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(passwords, "_write_atomic", read_only)
    assert users.check("alice", "correct horse")
    assert old_file.read_text() == text
    assert logged == [
        (
            "warn",
            "password_upgrade_failed",
            {"path": str(old_file), "user": "alice", "error": "[Errno 30] Read-only file system"},
        )
    ]
    assert users._users["alice"] == OLD_ALICE, "kept: the next login tries again"
    monkeypatch.undo()


def test_a_file_broken_since_the_load_is_logged_and_left(
    old_file: Path, logged: list[tuple[str, str, dict[str, Any]]]
) -> None:
    users = PasswordFile.load(old_file)
    broken = old_file.read_text() + "mallory\n"
    old_file.write_text(broken)
    assert users.check("alice", "correct horse")
    assert old_file.read_text() == broken
    assert logged == [
        (
            "warn",
            "password_upgrade_failed",
            {
                "path": str(old_file),
                "user": "alice",
                "error": f"{old_file}:8: expected NAME:scrypt$N$r$p$salt$hash (no ':' found)",
            },
        )
    ]
    assert users._users["alice"] == OLD_ALICE


# -- set and remove -----------------------------------------------------------------------


def test_set_creates_the_file_with_one_line_mode_0600(tmp_path: Path, cheap_scrypt: int) -> None:
    path = tmp_path / "passwd"
    PasswordFile.set(path, "alice", "wonderland")
    text = path.read_text()
    assert text.startswith(f"alice:scrypt${cheap_scrypt}$8$1$") and text.count("\n") == 1
    assert text.endswith("\n") and verify_password("wonderland", text.strip().split(":", 1)[1])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["passwd"]


def test_set_changes_a_user_in_place_and_appends_a_new_one(old_file: Path) -> None:
    before = lines_of(old_file)
    PasswordFile.set(old_file, "carol", "new carol")
    after = lines_of(old_file)
    assert after[:5] == before[:5] and after[6:] == before[6:] and len(after) == 7
    assert after[5].startswith("carol:") and verify_password("new carol", after[5][6:])
    assert stat.S_IMODE(old_file.stat().st_mode) == 0o600

    PasswordFile.set(old_file, "dave", "d")
    added = lines_of(old_file)
    assert added[:7] == after and len(added) == 8
    assert added[7].startswith("dave:") and verify_password("d", added[7][5:])
    users = PasswordFile.load(old_file)
    assert users.users == ["bob", "alice", "carol", "dave"] and len(users) == 4
    assert "dave" in users and "eve" not in users
    assert users.check("carol", "new carol") and users.check("dave", "d")


def test_set_refuses_a_bad_name_or_an_empty_password_and_writes_nothing(old_file: Path) -> None:
    text = old_file.read_text()
    with pytest.raises(AuthError) as info:
        PasswordFile.set(old_file, "bad name", "pw")
    assert str(info.value).startswith("invalid user name 'bad name': use 1-64 characters")
    with pytest.raises(AuthError) as info:
        PasswordFile.set(old_file, "alice", "")
    assert str(info.value) == "empty password refused"
    assert old_file.read_text() == text


def test_remove_deletes_exactly_that_line(old_file: Path) -> None:
    before = lines_of(old_file)
    PasswordFile.remove(old_file, "alice")
    assert lines_of(old_file) == before[:4] + before[5:]
    assert stat.S_IMODE(old_file.stat().st_mode) == 0o600
    PasswordFile.remove(old_file, "bob")
    PasswordFile.remove(old_file, "carol")
    assert old_file.read_text() == "# lab users\n\n  # indented comment\n# end\n"
    assert PasswordFile.load(old_file).users == []
    assert [p.name for p in old_file.parent.iterdir()] == ["passwd"]


def test_remove_of_an_unknown_user_says_so_and_leaves_the_file(
    old_file: Path, tmp_path: Path
) -> None:
    text = old_file.read_text()
    with pytest.raises(AuthError) as info:
        PasswordFile.remove(old_file, "dave")
    assert str(info.value) == f"{old_file}: no user 'dave'"
    assert old_file.read_text() == text
    assert stat.S_IMODE(old_file.stat().st_mode) == 0o644
    missing = tmp_path / "none"
    with pytest.raises(AuthError) as info:
        PasswordFile.remove(missing, "dave")
    assert str(info.value) == f"{missing}: no user 'dave'"
    assert not missing.exists()


def test_a_comment_naming_a_user_is_not_that_user(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    path.write_text(f"#alice:{OLD_ALICE}\n")
    with pytest.raises(AuthError, match="no user 'alice'"):
        PasswordFile.remove(path, "alice")
    PasswordFile.set(path, "alice", "pw")
    assert lines_of(path)[0] == f"#alice:{OLD_ALICE}" and len(lines_of(path)) == 2


# -- the production parameters, and what derives from them -----------------------------------


@pytest.mark.real_scrypt
def test_the_production_parameters_and_the_bounds_derived_from_them() -> None:
    assert (passwords.SCRYPT_N, passwords.SCRYPT_R, passwords.SCRYPT_P) == (2**17, 8, 1)
    assert passwords._MAX_WORK == 8 * 2**17 * 8
    salt_hash = f"{passwords._b64(bytes(16))}${passwords._b64(bytes(32))}"
    assert passwords._parse_hash(f"scrypt${2**17}$8$8${salt_hash}")[:3] == (2**17, 8, 8)
    with pytest.raises(ValueError) as info:
        passwords._parse_hash(f"scrypt${2**17}$8$9${salt_hash}")
    assert str(info.value) == "N*r*p is 9437184, more than 8388608 (8 times the default)"


@pytest.mark.real_scrypt
def test_needs_upgrade_compares_all_three_production_parameters() -> None:
    rest = "AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 43 + "="
    assert not needs_upgrade(f"scrypt$131072$8$1${rest}")
    for params in ("16384$8$1", "131072$4$1", "131072$8$2", "131072$8$16", "1310720$8$1"):
        assert needs_upgrade(f"scrypt${params}${rest}"), params
    assert needs_upgrade(f"bcrypt$131072$8$1${rest}")


@pytest.mark.real_scrypt
def test_an_unknown_user_gets_the_scrypt_run_of_a_known_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The decoy for an unknown name: today's N, r and p, a 16-byte salt and a 32-byte hash, a
    fresh salt per file. The scrypt calls are recorded, not run: only their parameters count."""
    calls: list[tuple[str, int, int, int, int, int]] = []

    def record(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
        calls.append((password, len(salt), n, r, p, dklen))
        return b"\x01" * dklen

    monkeypatch.setattr(passwords, "_scrypt", record)
    known = hash_password("pw")
    path = tmp_path / "passwd"
    users = PasswordFile(path, {"alice": known})
    assert users.path == path and users.users == ["alice"] and len(users) == 1
    assert not users.check("nobody", "pw")
    assert users.check("alice", "pw")
    assert calls == [("pw", 16, 2**17, 8, 1, 32)] * 3
    scheme, n, r, p, salt, digest = users._decoy.split("$")
    assert (scheme, n, r, p) == ("scrypt", "131072", "8", "1")
    assert len(base64.b64decode(salt)) == 16 and base64.b64decode(digest) == bytes(32)
    assert PasswordFile(path, {})._decoy.split("$")[4] != salt
    assert not needs_upgrade(users._decoy)


def test_the_decoy_follows_a_lowered_cost(tmp_path: Path, cheap_scrypt: int) -> None:
    decoy = PasswordFile(tmp_path / "p", {})._decoy
    assert decoy.startswith(f"scrypt${cheap_scrypt}$8$1$") and not verify_password("", decoy)


# -- reading: every refusal's message in full ---------------------------------------------


def test_a_password_with_a_lone_surrogate_still_hashes() -> None:
    encoded = hash_password("pw\ud800")
    assert verify_password("pw\ud800", encoded) and not verify_password("pw", encoded)


def test_a_password_too_long_is_refused_by_its_length() -> None:
    assert verify_password("x" * 1024, hash_password("x" * 1024))
    with pytest.raises(AuthError) as info:
        hash_password("x" * 1025)
    assert str(info.value) == "password longer than 1024 characters"


def test_a_file_that_cannot_be_read_is_named_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(AuthError) as info:
        PasswordFile.load(tmp_path)
    assert str(info.value) == f"{tmp_path}: cannot read: Is a directory"
    with pytest.raises(AuthError) as info:
        PasswordFile.set(tmp_path, "alice", "pw")
    assert str(info.value) == f"{tmp_path}: cannot read: Is a directory"


def test_text_that_is_not_utf8_is_named_by_its_line(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    path.write_bytes(b"# one\n# two\n# thr\xffee\n")
    for action in (lambda: PasswordFile.load(path), lambda: PasswordFile.set(path, "a", "pw")):
        with pytest.raises(AuthError) as info:
            action()
        assert str(info.value) == f"{path}:3: not UTF-8 text"
    path.write_bytes(b"\xff\n")
    with pytest.raises(AuthError) as info:
        PasswordFile.load(path)
    assert str(info.value) == f"{path}:1: not UTF-8 text"


def test_the_number_of_users_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert passwords.MAX_USERS == 10_000
    monkeypatch.setattr(passwords, "MAX_USERS", 3)
    path = tmp_path / "passwd"
    entries = [f"u{i}:{OLD_ALICE}" for i in range(4)]
    path.write_text("\n".join(["# users", *entries[:3]]) + "\n")
    assert len(PasswordFile.load(path)) == 3
    path.write_text("\n".join(["# users", *entries]) + "\n")
    with pytest.raises(AuthError) as info:
        PasswordFile.load(path)
    assert str(info.value) == f"{path}:5: more than 3 users"


def test_a_line_may_be_512_characters_long(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    line = f"alice:{OLD_ALICE}".ljust(512)
    path.write_text(line + "\n")
    assert PasswordFile.load(path).check("alice", "correct horse")
    path.write_text(line + " \n")
    with pytest.raises(AuthError) as info:
        PasswordFile.load(path)
    assert str(info.value) == f"{path}:1: line longer than 512 characters"


def test_the_name_ends_at_the_first_colon(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    path.write_text(f"alice:{OLD_ALICE}:x\n")
    with pytest.raises(AuthError) as info:
        PasswordFile.load(path)
    assert str(info.value) == (
        f"{path}:1: bad password hash for 'alice': salt and hash must be base64"
    )


def test_a_long_invalid_name_is_shown_cut(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    name = "x" * 60 + " " + "y" * 39
    path.write_text(f"{name}:{OLD_ALICE}\n")
    with pytest.raises(AuthError) as info:
        PasswordFile.load(path)
    assert str(info.value) == (
        f"{path}:1: invalid user name {name[:70]!r} (1-64 characters from A-Z a-z 0-9 _ . @ -)"
    )


SALT16 = passwords._b64(bytes(16))
HASH32 = passwords._b64(bytes(32))


@pytest.mark.parametrize(
    ("encoded", "reason"),
    [
        ("bcrypt$16$8$1$s$h", "expected scrypt$N$r$p$salt$hash"),
        ("scrypt$16$8$1$s", "expected scrypt$N$r$p$salt$hash"),
        (f"scrypt$16$8$x${SALT16}${HASH32}", "N, r and p must be integers"),
        (f"scrypt$1$8$1${SALT16}${HASH32}", "N must be a power of two between 2 and 1048576"),
        (f"scrypt$6$8$1${SALT16}${HASH32}", "N must be a power of two between 2 and 1048576"),
        (f"scrypt$2097152$1$1${SALT16}${HASH32}", "N must be a power of two between 2 and 1048576"),
        (
            f"scrypt$16$0$1${SALT16}${HASH32}",
            "r must be 1..32, p 1..16, and 128*r*N at most 256 MiB",
        ),
        (
            f"scrypt$16$33$1${SALT16}${HASH32}",
            "r must be 1..32, p 1..16, and 128*r*N at most 256 MiB",
        ),
        (
            f"scrypt$16$8$17${SALT16}${HASH32}",
            "r must be 1..32, p 1..16, and 128*r*N at most 256 MiB",
        ),
        (f"scrypt$16$8$1$AAAA!AAAAAAAAAAAAAAAAAAA==${HASH32}", "salt and hash must be base64"),
        (f"scrypt$16$8$1${SALT16}$AAAA!{HASH32}", "salt and hash must be base64"),
        (
            f"scrypt$16$8$1${passwords._b64(bytes(7))}${HASH32}",
            "salt must be 8-64 bytes and hash 16-64 bytes",
        ),
        (
            f"scrypt$16$8$1${passwords._b64(bytes(65))}${HASH32}",
            "salt must be 8-64 bytes and hash 16-64 bytes",
        ),
        (
            f"scrypt$16$8$1${SALT16}${passwords._b64(bytes(15))}",
            "salt must be 8-64 bytes and hash 16-64 bytes",
        ),
        (
            f"scrypt$16$8$1${SALT16}${passwords._b64(bytes(65))}",
            "salt must be 8-64 bytes and hash 16-64 bytes",
        ),
    ],
)
def test_each_refused_encoding_says_why(encoded: str, reason: str) -> None:
    with pytest.raises(ValueError) as info:
        passwords._parse_hash(encoded)
    assert str(info.value) == reason
    assert not verify_password("pw", encoded)


@pytest.mark.parametrize(
    ("n", "r", "p", "salt", "digest"),
    [(2, 1, 1, 8, 16), (4, 32, 16, 64, 64), (2**20, 2, 1, 16, 32), (16, 1, 16, 8, 64)],
)
def test_the_bounds_themselves_are_accepted(n: int, r: int, p: int, salt: int, digest: int) -> None:
    encoded = f"scrypt${n}${r}${p}${passwords._b64(bytes(salt))}${passwords._b64(bytes(digest))}"
    assert passwords._parse_hash(encoded) == (n, r, p, bytes(salt), bytes(digest))
