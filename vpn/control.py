"""The local status socket: one JSON request line in, one JSON answer line out.

By default the socket is abstract (`@vpnlab-server`, `@vpnlab-client`): it lives in the network
namespace, not the file system, so each lab node — container or namespace — has its own without
any path to agree on, and nothing is left behind on disk.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from typing import Any

MAX_REQUEST = 4096


def socket_address(name: str) -> str:
    return "\0" + name[1:] if name.startswith("@") else name


async def serve(name: str, status: Callable[[], dict[str, Any]]) -> asyncio.AbstractServer:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            try:
                request = json.loads(line[:MAX_REQUEST] or b"{}")
                command = request.get("cmd", "status") if isinstance(request, dict) else None
            except json.JSONDecodeError:
                command = None
            if command == "status":
                answer: dict[str, Any] = {"ok": True, "status": status()}
            else:
                answer = {"ok": False, "error": 'unknown request; send {"cmd": "status"}'}
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
        raise OSError(
            exc.errno,
            f"control socket {name}: {exc.strerror} — another vpn process of this kind is already "
            "running here; stop it or pass --control with another name",
        ) from None


def query(name: str, timeout: float = 5.0) -> dict[str, Any]:
    """Ask a running server or client for its status (blocking; for `vpn status`)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(socket_address(name))
        sock.sendall(b'{"cmd": "status"}\n')
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    answer = json.loads(data)
    if not answer.get("ok"):
        raise RuntimeError(answer.get("error", "status request failed"))
    status: dict[str, Any] = answer["status"]
    return status
