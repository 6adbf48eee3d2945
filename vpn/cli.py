"""`vpn`: server, client, status, pki, passwd."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from vpn import config, control, log, settings
from vpn.errors import VpnError

DESCRIPTION = """\
A TLS 1.3 VPN over TUN. The gateway runs `vpn server`, each client `vpn client`;
`vpn status` asks a running one how it is doing, `vpn kill` ends a session;
`vpn pki` and `vpn passwd` make credentials."""


def _run_server(args: argparse.Namespace) -> int:
    from vpn.server import runtime

    cfg = settings.load(config.ServerConfig, args)
    log.setup(cfg.log_level, cfg.log_format)
    asyncio.run(runtime.serve(cfg, lambda: settings.load(config.ServerConfig, args)))
    return 0


def _run_client(args: argparse.Namespace) -> int:
    from vpn.client import connection

    cfg = settings.load(config.ClientConfig, args)
    log.setup(cfg.log_level, cfg.log_format)
    return asyncio.run(connection.serve(cfg))


def _since(stamp: float | None) -> str:
    if not stamp:
        return "-"
    seconds = int(time.time() - stamp)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"


def _size(count: int) -> str:
    n = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return str(n)


def _drops(row: dict[str, Any]) -> str:
    parts = [
        f"{k.removeprefix('dropped_')}={v}"
        for k, v in row.items()
        if k.startswith("dropped_") and v
    ]
    return ",".join(parts) or "0"


def format_status(status: dict[str, Any]) -> str:
    lines: list[str] = []
    if status["role"] == "server":
        lines.append(
            f"server {status['listen']}  tun {status['tun']} {status['address']}"
            + (f" {status['address6']}" if status.get("address6") else "")
            + "  "
            f"offload {'on' if status['offload'] else 'off'}  up {_since(status['started'])}  "
            f"clients {len(status['clients'])}  handshaking {status['handshaking']}"
        )
        header = ("IDENTITY", "ADDRESS", "PEER", "SINCE", "RX", "TX", "RX PKTS", "TX PKTS", "DROPS")
        rows = [
            (
                c["identity"] + (f" ({c['user']})" if c["user"] else ""),
                " ".join(filter(None, (c["address"], c.get("address6"))))
                + "".join(f" +{s}" for s in c["subnets"]),
                c["peer"],
                _since(c["connected_since"]),
                _size(c["rx_bytes"]),
                _size(c["tx_bytes"]),
                str(c["rx_packets"]),
                str(c["tx_packets"]),
                _drops(c),
            )
            for c in status["clients"]
        ]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            lines.append(
                "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            )
        lines.append(f"totals: drops {_drops(status['totals'])}")
    else:
        lines.append(
            f"client → {status['server']}  {status['state']}  tun {status['tun'] or '-'} "
            f"{status['address'] or '-'}"
            + (f" {status['address6']}" if status.get("address6") else "")
            + f"  since {_since(status['connected_since'])}  reconnects {status['reconnects']}"
        )
        routes = [*status["routes"], *status.get("routes6", [])]
        lines.append(f"routes: {', '.join(routes) or '-'}")
        lines.append(
            f"rx {_size(status['rx_bytes'])} / {status['rx_packets']} pkts   "
            f"tx {_size(status['tx_bytes'])} / {status['tx_packets']} pkts   drops {_drops(status)}"
        )
        if status["last_error"]:
            lines.append(f"last error: {status['last_error']}")
    return "\n".join(lines)


def _run_status(args: argparse.Namespace) -> int:
    names = [args.control] if args.control else ["@vpnlab-server", "@vpnlab-client"]
    found: list[dict[str, Any]] = []
    for name in names:
        try:
            found.append(control.query(name))
        except (FileNotFoundError, ConnectionRefusedError):
            continue
    if not found:
        print(
            f"vpn status: nothing answers on {' or '.join(names)}: is a vpn server or client "
            "running in this network namespace? (pass --control if it uses another socket)",
            file=sys.stderr,
        )
        return 1
    if args.json:
        print(json.dumps(found[0] if len(found) == 1 else found, indent=2))
    else:
        print("\n\n".join(format_status(s) for s in found))
    return 0


def _run_kill(args: argparse.Namespace) -> int:
    """End one client's session on the running server (the client is told not to retry)."""
    answer = control.request(args.control, {"cmd": "kill", "identity": args.identity})
    print(f"ended the session of {answer['killed']} ({answer['address'] or '-'}, {answer['peer']})")
    return 0


def _run_reload(args: argparse.Namespace) -> int:
    """Ask the running server to re-read its CRL and settings file (as SIGHUP does)."""
    answer = control.request(args.control, {"cmd": "reload"})
    applied = ", ".join(answer.get("applied", [])) or "nothing"
    print(f"reloaded: applied {applied}; {answer.get('clients', 0)} clients updated")
    if answer.get("not_applied"):
        print(f"not applied until a restart: {', '.join(answer['not_applied'])}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from vpn import cli_pki

    parser = argparse.ArgumentParser(prog="vpn", description=DESCRIPTION)
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="COMMAND")

    server = verbs.add_parser("server", help="run the gateway", description="Run the VPN gateway.")
    settings.add_arguments(server, config.ServerConfig)
    server.set_defaults(func=_run_server)

    client = verbs.add_parser(
        "client", help="connect to a gateway", description="Run a VPN client."
    )
    settings.add_arguments(client, config.ClientConfig)
    client.set_defaults(func=_run_client)

    status = verbs.add_parser("status", help="show a running server's or client's sessions")
    status.add_argument(
        "--control", help="control socket (default: try @vpnlab-server, @vpnlab-client)"
    )
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.set_defaults(func=_run_status)

    kill = verbs.add_parser(
        "kill",
        help="end one client's session on the running server",
        description="End the session of identity NAME (the client is told not to reconnect; "
        "revoke its certificate to keep it out for good).",
    )
    kill.add_argument("identity", metavar="NAME", help="the client's identity (certificate CN)")
    kill.add_argument(
        "--control", default="@vpnlab-server", help="control socket (default: %(default)s)"
    )
    kill.set_defaults(func=_run_kill)

    reload = verbs.add_parser(
        "reload",
        help="re-read the running server's CRL and --config file",
        description="Re-read the CRL and the settings file of the running server (like SIGHUP): "
        "pushed routes and name servers reach connected clients without a reconnect.",
    )
    reload.add_argument(
        "--control", default="@vpnlab-server", help="control socket (default: %(default)s)"
    )
    reload.set_defaults(func=_run_reload)

    cli_pki.add_pki_parser(verbs)
    cli_pki.add_passwd_parser(verbs)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except VpnError as exc:  # the message already says what happened and what to do
        return _fail(args.verb, str(exc))
    except OSError as exc:
        return _fail(args.verb, exc.strerror or str(exc))
    return status


def _fail(verb: str, text: str) -> int:
    print(f"vpn {verb}: error: {text}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
