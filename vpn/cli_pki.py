"""The `vpn pki` and `vpn passwd` subcommands (argparse); `vpn.cli` registers them.

Each subcommand's `func` takes the parsed arguments and returns an exit status; a failure is
one line on stderr, `vpn pki: error: ...`, and status 2. Passwords are never taken from the
command line: they are asked for twice on the terminal, or read from stdin.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from pathlib import Path

from vpn.credentials import pki
from vpn.credentials.passwords import PasswordFile, check_user_name
from vpn.errors import AuthError, CredentialError

EXIT_ERROR = 2


def _fail(command: str, message: object) -> int:
    print(f"vpn {command}: error: {message}", file=sys.stderr)
    return EXIT_ERROR


def _guarded(command: str, func: Callable[[argparse.Namespace], int]) -> Callable[..., int]:
    """Run `func`, turning expected failures into one line on stderr and status 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except CredentialError as exc:
            return _fail(command, exc)
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            return _fail(command, f"{where}{exc.strerror or exc}")
        except (EOFError, KeyboardInterrupt):
            return _fail(command, "interrupted")

    run.__doc__ = func.__doc__
    return run


# -- vpn pki -----------------------------------------------------------------------------------


def _pki_init(args: argparse.Namespace) -> int:
    path = pki.init_ca(args.dir, common_name=args.cn, days=args.days, force=args.force)
    print(f"CA {args.cn!r}: {path} (key {args.dir / pki.CA_KEY}, CRL {args.dir / pki.CRL_FILE})")
    return 0


def _pki_issue(args: argparse.Namespace) -> int:
    kind: pki.Kind = "server" if args.server else "client"
    cert, key = pki.issue(
        args.dir, args.name, kind, sans=args.san, days=args.days, force=args.force
    )
    print(f"{kind} certificate {args.name!r}: {cert} (key {key})")
    if args.force:
        print(f"any earlier certificate {args.name!r} is revoked: the CRL lists it")
    return 0


def _pki_revoke(args: argparse.Namespace) -> int:
    crl = pki.revoke(args.dir, args.name)
    print(
        f"revoked {args.name!r}; CRL rewritten: {crl} (running servers reload it within a second)"
    )
    return 0


def _pki_crl(args: argparse.Namespace) -> int:
    crl = pki.write_crl(args.dir, days=args.days)
    print(f"CRL rewritten: {crl} (valid {args.days} days)")
    return 0


def _pki_lab(args: argparse.Namespace) -> int:
    clients = tuple(args.client) if args.client else ("client1", "client2", "client3")
    paths = pki.lab_pki(
        args.dir,
        server_name=args.server_name,
        server_sans=args.san,
        clients=clients,
        force=args.force,
    )
    width = max(len(k) for k in paths)
    for key, path in paths.items():
        print(f"{key:<{width}}  {path}")
    return 0


def _pki_list(args: argparse.Namespace) -> int:
    rows = [("NAME", "KIND", "SERIAL", "NOT-AFTER", "REVOKED")]
    for e in pki.list_certs(args.dir):
        rows.append(
            (e["name"], e["kind"], e["serial"], e["not_after"], e.get("revoked_at") or "no")
        )
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(f"{v!s:<{w}}" for v, w in zip(row, widths, strict=True)).rstrip())
    return 0


def add_pki_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Register `pki` with its verbs: init, issue, revoke, crl, lab, list."""
    parser = subparsers.add_parser(
        "pki",
        help="make and manage the certificates of a VPN (CA, server, clients, CRL)",
        description="A small certificate authority in one directory: ca.crt/ca.key, crl.pem, "
        "index.json and NAME.crt/NAME.key per certificate (keys mode 0600).",
    )
    verbs = parser.add_subparsers(dest="pki_verb", metavar="VERB", required=True)

    def verb(
        name: str, help_text: str, func: Callable[[argparse.Namespace], int]
    ) -> argparse.ArgumentParser:
        p = verbs.add_parser(name, help=help_text, description=help_text)
        p.add_argument("dir", type=Path, metavar="DIR", help="the PKI directory")
        p.set_defaults(func=_guarded("pki", func))
        return p

    p = verb("init", "create a CA (and an empty CRL) in DIR", _pki_init)
    p.add_argument("--cn", default="vpnlab CA", help="common name of the CA (default: %(default)s)")
    p.add_argument("--days", type=int, default=3650, help="validity in days (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="replace an existing CA (default: refuse)")

    p = verb("issue", "issue a server or client certificate signed by the CA in DIR", _pki_issue)
    p.add_argument("name", metavar="NAME", help="certificate name: CN, and DIR/NAME.crt/.key")
    kind = p.add_mutually_exclusive_group(required=True)
    kind.add_argument("--server", action="store_true", help="a gateway certificate (serverAuth)")
    kind.add_argument("--client", action="store_true", help="a client certificate (clientAuth)")
    p.add_argument(
        "--san",
        action="append",
        default=[],
        metavar="X",
        help="extra DNS name or IP address for a server certificate, repeatable "
        "(default: none; NAME itself is always included)",
    )
    p.add_argument("--days", type=int, default=825, help="validity in days (default: %(default)s)")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace existing NAME files and revoke the certificate they held (default: refuse)",
    )

    p = verb("revoke", "revoke certificate NAME and rewrite the CRL", _pki_revoke)
    p.add_argument("name", metavar="NAME", help="the certificate name given to `issue`")

    p = verb("crl", "rewrite DIR/crl.pem from the index (e.g. before it expires)", _pki_crl)
    p.add_argument(
        "--days", type=int, default=30, help="CRL validity in days (default: %(default)s)"
    )

    p = verb(
        "lab",
        "everything a lab run needs: CA, gateway, clients, and expired, revoked, impostor "
        "and rogue-CA certificates for the negative tests; reuses what is already there",
        _pki_lab,
    )
    p.add_argument(
        "--server-name",
        default="gateway",
        help="the gateway's name, its certificate's CN and DNS name (default: %(default)s)",
    )
    p.add_argument(
        "--san",
        action="append",
        default=[],
        metavar="X",
        help="extra DNS name or IP address of the gateway, repeatable (default: none)",
    )
    p.add_argument(
        "--client",
        action="append",
        default=[],
        metavar="NAME",
        help="a client certificate to issue, repeatable (default: client1 client2 client3)",
    )
    p.add_argument(
        "--force", action="store_true", help="make every file anew (default: reuse existing)"
    )

    verb("list", "list the certificates issued from DIR", _pki_list)
    return parser


# -- vpn passwd --------------------------------------------------------------------------------


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        password = password.removesuffix("\r")
    else:
        password = getpass.getpass("New password: ")
        if getpass.getpass("Repeat password: ") != password:
            raise AuthError("the passwords do not match; nothing changed")
    if not password:
        raise AuthError("empty password refused; nothing changed")
    return password


def _passwd(args: argparse.Namespace) -> int:
    check_user_name(args.user)
    if args.delete:
        PasswordFile.remove(args.file, args.user)
        print(f"{args.file}: removed {args.user!r}")
        return 0
    existed = args.file.exists() and args.user in PasswordFile.load(args.file)
    PasswordFile.set(args.file, args.user, _read_password(args.password_stdin))
    print(f"{args.file}: {'changed' if existed else 'added'} {args.user!r}")
    return 0


def add_passwd_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Register `passwd FILE USER [--delete] [--password-stdin]`."""
    parser = subparsers.add_parser(
        "passwd",
        help="add a user, change their password, or delete them in a password file",
        description="Edit a password file (scrypt hashes, mode 0600). The password is asked "
        "for twice on the terminal; it is never given on the command line.",
    )
    parser.add_argument("file", type=Path, metavar="FILE", help="the password file")
    parser.add_argument("user", metavar="USER", help="user name (A-Z a-z 0-9 _ . @ -, 1-64)")
    parser.add_argument(
        "--delete", action="store_true", help="remove USER (default: add or change USER)"
    )
    parser.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of stdin, for scripts "
        "(default: ask twice on the terminal)",
    )
    parser.set_defaults(func=_guarded("passwd", _passwd))
    return parser
