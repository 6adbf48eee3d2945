"""The local control socket: one JSON request line in, one JSON answer line out.

By default the socket is abstract (`@vpnlab-server`, `@vpnlab-client`): it lives in the network
namespace, not the file system, so each lab node — container or namespace — has its own without
any path to agree on, and nothing is left behind on disk.

An abstract socket has no file mode: every process in the namespace can connect to it, and any
of them can bind the name first. Both ends therefore check who is on the other side
(SO_PEERCRED, which the kernel fills in and the peer cannot forge): the server answers only
root and its own user, and `vpn status` / `vpn kill` talk only to a socket owned by root or
by themselves, so a squatter can neither read the sessions nor feed a made-up answer.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import socket
import struct
from collections.abc import Callable, Mapping
from typing import Any

from vpn import log
from vpn.errors import ControlError, VpnError

MAX_REQUEST = 4096
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid

Handler = Callable[[dict[str, Any]], dict[str, Any]]


def socket_address(name: str) -> str:
    return "\0" + name[1:] if name.startswith("@") else name


def peer_credentials(sock: Any) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a connected unix socket."""
    pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    return pid, uid, gid


def trusted(uid: int) -> bool:
    """Root, or the user this process runs as: the only ones who may see or end sessions."""
    return uid in (0, os.geteuid())


def _answer(
    request: object, status: Callable[[], dict[str, Any]], commands: Mapping[str, Handler]
) -> dict[str, Any]:
    if not isinstance(request, dict):
        request = {"cmd": None}
    command = request.get("cmd", "status")
    try:
        if command == "status":
            return {"ok": True, "status": status()}
        if isinstance(command, str) and command in commands:
            return commands[command](request)
    except VpnError as exc:
        return {"ok": False, "error": str(exc)}
    known = ", ".join(f'{{"cmd": "{c}"}}' for c in ("status", *commands))
    return {"ok": False, "error": f"unknown request; send one of {known}"}


def _owner(address: str) -> str:
    """Who holds the name `address`: 'pid N (uid U)', asked of the kernel through a connect."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1)
        try:
            probe.connect(address)
        except OSError:
            return "a process that does not accept connections (owner unknown)"
        pid, uid, _ = peer_credentials(probe)
    return f"pid {pid} (uid {uid})"


async def serve(
    name: str,
    status: Callable[[], dict[str, Any]],
    commands: Mapping[str, Handler] | None = None,
    *,
    role: str = "server",
) -> asyncio.AbstractServer:
    """Answer {"cmd": "status"} and each of `commands` (name → handler of the request) on
    `name`, for root and our own user only."""
    handlers = dict(commands or {})

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            # Read the request first even when refusing: closing on unread data would reset
            # the connection, and the refusal would never be read.
            line = await asyncio.wait_for(reader.readline(), 5)
            pid, uid, _ = peer_credentials(writer.get_extra_info("socket"))
            if not trusted(uid):
                log.warn("control_refused", control=name, pid=pid, uid=uid)
                error = (
                    f"refused: only root or uid {os.geteuid()} may use control socket {name} "
                    f"(you are uid {uid})"
                )
                writer.write(json.dumps({"ok": False, "error": error}).encode() + b"\n")
                await writer.drain()
                return
            try:
                request = json.loads(line[:MAX_REQUEST] or b"{}")
            except (json.JSONDecodeError, UnicodeDecodeError):
                request = None
            answer = _answer(request, status, handlers)
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    address = socket_address(name)
    try:
        return await asyncio.start_unix_server(handle, path=address)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise ControlError(f"control socket {name}: {exc.strerror}") from None
        raise ControlError(
            f"control socket {name} is already bound by {_owner(address)}: another vpn {role} "
            "runs here, or someone squats the name",
            advice="stop it, or pass --control with another name",
        ) from None


def request(name: str, message: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """Send one request to a running server or client and return its answer (blocking).

    The socket must belong to root or to us; anything else may be a squatter posing as the
    server, and its answer is not read.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(socket_address(name))
        pid, uid, _ = peer_credentials(sock)
        if not trusted(uid):
            raise ControlError(
                f"control socket {name} belongs to pid {pid} (uid {uid}), not to root or to us: "
                "refusing to trust it (someone may squat the name)",
                advice="find that process (ps -p PID) and stop it",
            )
        sock.sendall(json.dumps(message).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    try:
        answer = json.loads(data)
    except ValueError:
        raise ControlError(f"control socket {name}: no valid answer") from None
    if not isinstance(answer, dict) or not answer.get("ok"):
        error = answer.get("error") if isinstance(answer, dict) else None
        raise ControlError(f"control socket {name}: {error or 'request failed'}")
    return answer


def query(name: str, timeout: float = 5.0) -> dict[str, Any]:
    """Ask a running server or client for its status (blocking; for `vpn status`)."""
    status: dict[str, Any] = request(name, {"cmd": "status"}, timeout)["status"]
    return status
