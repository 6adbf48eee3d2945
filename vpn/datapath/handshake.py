"""Setting up a tunnel's TLS socket on the event loop: a non-blocking handshake, and the
socket options a tunnel wants."""

from __future__ import annotations

import asyncio
import socket
import ssl


async def wait_fd(loop: asyncio.AbstractEventLoop, fd: int, *, write: bool) -> None:
    future: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not future.done():
            future.set_result(None)

    (loop.add_writer if write else loop.add_reader)(fd, ready)
    try:
        await future
    finally:
        (loop.remove_writer if write else loop.remove_reader)(fd)


async def handshake(loop: asyncio.AbstractEventLoop, sock: ssl.SSLSocket) -> None:
    """A non-blocking TLS handshake; the caller bounds it with asyncio.wait_for."""
    fd = sock.fileno()
    while True:
        try:
            sock.do_handshake()
            return
        except ssl.SSLWantReadError:
            await wait_fd(loop, fd, write=False)
        except ssl.SSLWantWriteError:
            await wait_fd(loop, fd, write=True)


def tune_socket(sock: socket.socket) -> None:
    """Low latency for a tunnel: no Nagle delay on small frames such as keepalives and pings."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
