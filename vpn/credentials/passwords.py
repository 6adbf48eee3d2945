"""User names and passwords, the optional second factor after the client certificate.

The password file holds one user per line, `name:scrypt$N$r$p$<salt b64>$<hash b64>`;
`#` comments and blank lines are kept. scrypt at N=2^17, r=8 makes each guess cost 128 MiB and
~0.3 s, so a stolen file is slow to attack; `check` spends the same work on unknown users so
that timing does not reveal which names exist.

Each line carries its own parameters, so hashes made with older, cheaper ones (N=2^14) still
verify — and are rewritten with the current ones at the user's next successful login. The
parameters read from a file are bounded (N, r, p, memory and total work) so that a crafted line
cannot make a login take gigabytes or minutes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import threading
from pathlib import Path

from vpn import log
from vpn.credentials.files import write_replace
from vpn.errors import AuthError

SCRYPT_N = 2**17
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32

MAX_LINE = 512  # a valid line is ~120 characters
MAX_USERS = 10_000
MAX_PASSWORD = 1024  # characters
# Bounds on parameters read from a file, so a crafted line cannot demand gigabytes of memory.
_MAX_N, _MAX_R, _MAX_P = 2**20, 32, 16
_MAX_MEM = 256 * 1024 * 1024
_MAX_WORK = 8 * SCRYPT_N * SCRYPT_R * SCRYPT_P  # N*r*p: at most 8x the default's time

NAME_RE = re.compile(r"[A-Za-z0-9_.@-]{1,64}")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8", "surrogatepass"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        dklen=dklen,
        # OpenSSL's default cap is 32 MiB, below N=2^17's 128 MiB: say what it may use, with slack.
        maxmem=128 * r * (n + p + 2) + 2 * 1024 * 1024,
    )


def hash_password(password: str) -> str:
    """Encode `password` as `scrypt$N$r$p$salt$hash` with a fresh random salt."""
    if len(password) > MAX_PASSWORD:
        raise AuthError(f"password longer than {MAX_PASSWORD} characters")
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, HASH_BYTES)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def _parse_hash(encoded: str) -> tuple[int, int, int, bytes, bytes]:
    """Split and bound-check an encoded hash; raise ValueError with the reason."""
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise ValueError("expected scrypt$N$r$p$salt$hash")
    try:
        n, r, p = (int(x) for x in parts[1:4])
    except ValueError:
        raise ValueError("N, r and p must be integers") from None
    if not (2 <= n <= _MAX_N and n & (n - 1) == 0):
        raise ValueError(f"N must be a power of two between 2 and {_MAX_N}")
    if not (1 <= r <= _MAX_R and 1 <= p <= _MAX_P) or 128 * r * n > _MAX_MEM:
        raise ValueError(f"r must be 1..{_MAX_R}, p 1..{_MAX_P}, and 128*r*N at most 256 MiB")
    if n * r * p > _MAX_WORK:
        raise ValueError(f"N*r*p is {n * r * p}, more than {_MAX_WORK} (8 times the default)")
    try:
        salt = base64.b64decode(parts[4], validate=True)
        digest = base64.b64decode(parts[5], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("salt and hash must be base64") from None
    if not 8 <= len(salt) <= 64 or not 16 <= len(digest) <= 64:
        raise ValueError("salt must be 8-64 bytes and hash 16-64 bytes")
    return n, r, p, salt, digest


def needs_upgrade(encoded: str) -> bool:
    """True if `encoded` was made with other parameters than today's (SCRYPT_N/R/P)."""
    return not encoded.startswith(f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}$")


def verify_password(password: str, encoded: str) -> bool:
    """True if `password` matches `encoded` (constant-time comparison); False if malformed."""
    try:
        n, r, p, salt, digest = _parse_hash(encoded)
    except ValueError:
        return False
    candidate = _scrypt(password, salt, n, r, p, len(digest))
    return hmac.compare_digest(candidate, digest)


def check_user_name(user: str) -> str:
    """Return `user` if it is a valid name, else raise AuthError."""
    if not NAME_RE.fullmatch(user):
        raise AuthError(f"invalid user name {user!r}: use 1-64 characters from A-Z a-z 0-9 _ . @ -")
    return user


class PasswordFile:
    """The users of one password file, as read by `load`."""

    def __init__(self, path: Path, users: dict[str, str]) -> None:
        self.path = path
        self._users = users
        # The work for an unknown user: a real scrypt run against a hash nothing matches.
        salt = _b64(secrets.token_bytes(SALT_BYTES))
        self._decoy = f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt}${_b64(bytes(HASH_BYTES))}"
        self._lock = threading.Lock()  # checks run in executor threads; one rewrite at a time

    @property
    def users(self) -> list[str]:
        """The user names, in file order."""
        return list(self._users)

    def __contains__(self, user: object) -> bool:
        return user in self._users

    def __len__(self) -> int:
        return len(self._users)

    @classmethod
    def load(cls, path: Path) -> PasswordFile:
        """Read and validate a password file; a bad line is an AuthError naming file:line."""
        path = Path(path)
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            raise AuthError(
                f"{path}: no such password file — create it with `vpn passwd {path} USER`"
            ) from None
        except OSError as exc:
            raise AuthError(f"{path}: cannot read: {exc.strerror or exc}") from exc
        users: dict[str, str] = {}
        for lineno, line in enumerate(_split_lines(path, text), 1):
            parsed = _parse_line(path, lineno, line)
            if parsed is None:
                continue
            user, encoded = parsed
            if user in users:
                raise AuthError(f"{path}:{lineno}: user {user!r} appears twice")
            if len(users) >= MAX_USERS:
                raise AuthError(f"{path}:{lineno}: more than {MAX_USERS} users")
            users[user] = encoded
        return cls(path, users)

    def check(self, user: str, password: str) -> bool:
        """True if `user` exists and `password` is theirs; the same work either way."""
        encoded = self._users.get(user)
        ok = verify_password(password, encoded if encoded is not None else self._decoy)
        if ok and encoded is not None and needs_upgrade(encoded):
            self._upgrade(user, encoded, password)
        return ok and encoded is not None

    def _upgrade(self, user: str, old: str, password: str) -> None:
        """Rehash `user`'s password with today's parameters and rewrite the file atomically,
        other lines untouched. A file that cannot be rewritten (read-only, gone, changed
        meanwhile) is logged and left; the login succeeds either way."""
        new = hash_password(password)
        with self._lock:
            try:
                lines = _read_lines_for_update(self.path)
                for i, line in enumerate(lines):
                    parsed = _parse_line(self.path, i + 1, line)
                    if parsed is not None and parsed[0] == user:
                        if parsed[1] != old:
                            return  # changed on disk since it was loaded: that change wins
                        lines[i] = f"{user}:{new}"
                        break
                else:
                    return
                _write_atomic(self.path, lines)
            except (AuthError, OSError) as exc:
                log.warn("password_upgrade_failed", path=str(self.path), user=user, error=str(exc))
                return
            self._users[user] = new
        log.event("password_upgraded", path=str(self.path), user=user, n=SCRYPT_N)

    @staticmethod
    def set(path: Path, user: str, password: str) -> None:
        """Add `user` or change their password; rewrites the file atomically (mode 0600)."""
        path = Path(path)
        check_user_name(user)
        if not password:
            raise AuthError("empty password refused")
        encoded = hash_password(password)
        lines = _read_lines_for_update(path)
        entry = f"{user}:{encoded}"
        for i, line in enumerate(lines):
            parsed = _parse_line(path, i + 1, line)
            if parsed is not None and parsed[0] == user:
                lines[i] = entry
                break
        else:
            lines.append(entry)
        _write_atomic(path, lines)

    @staticmethod
    def remove(path: Path, user: str) -> None:
        """Delete `user`; rewrites the file atomically. An unknown user is an AuthError."""
        path = Path(path)
        lines = _read_lines_for_update(path)
        kept = [
            line
            for i, line in enumerate(lines)
            if (parsed := _parse_line(path, i + 1, line)) is None or parsed[0] != user
        ]
        if len(kept) == len(lines):
            raise AuthError(f"{path}: no user {user!r}")
        _write_atomic(path, kept)


def _split_lines(path: Path, data: bytes) -> list[str]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        lineno = data[: exc.start].count(b"\n") + 1
        raise AuthError(f"{path}:{lineno}: not UTF-8 text") from None
    return text.splitlines()


def _parse_line(path: Path, lineno: int, line: str) -> tuple[str, str] | None:
    """(user, encoded hash) of one line; None for a comment or blank line."""
    where = f"{path}:{lineno}"
    if len(line) > MAX_LINE:
        raise AuthError(f"{where}: line longer than {MAX_LINE} characters")
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None
    user, sep, encoded = stripped.partition(":")
    if not sep:
        raise AuthError(f"{where}: expected NAME:scrypt$N$r$p$salt$hash (no ':' found)")
    if not NAME_RE.fullmatch(user):
        raise AuthError(
            f"{where}: invalid user name {user[:70]!r} (1-64 characters from A-Z a-z 0-9 _ . @ -)"
        )
    try:
        _parse_hash(encoded)
    except ValueError as exc:
        raise AuthError(f"{where}: bad password hash for {user!r}: {exc}") from None
    return user, encoded


def _read_lines_for_update(path: Path) -> list[str]:
    """The file's lines, validated; [] if the file does not exist yet."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise AuthError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    lines = _split_lines(path, data)
    for i, line in enumerate(lines):
        _parse_line(path, i + 1, line)
    return lines


def _write_atomic(path: Path, lines: list[str]) -> None:
    """Replace `path` atomically, mode 0600 (the PKI's writer: one place for this logic)."""
    write_replace(path, "".join(f"{line}\n" for line in lines).encode(), 0o600)
