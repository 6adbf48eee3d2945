"""The client's one connection to the gateway: CONFIG first, then packets into the TUN; a
CONFIG in the data phase is an update for the tunnel.

Apart from `vpn.client.connection` (login, reconnect) because this is the per-frame work; it
sees the client only through `Owner`, so the two modules do not import each other.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from typing import Protocol

from vpn import log, protocol
from vpn.client.tunnel import Tunnel
from vpn.datapath.channel import Channel
from vpn.errors import Disconnected, ProtocolError, Refused
from vpn.iface.tun_writes import explain_write_error
from vpn.protocol import MsgType


class Owner(Protocol):
    """What a Link needs of the client that owns it."""

    loop: asyncio.AbstractEventLoop
    tunnel: Tunnel

    def resume_tun(self) -> None: ...
    def on_link_closed(self, link: Link) -> None: ...
    def on_update(self, link: Link, config: protocol.Config) -> None: ...


class Link(Channel):
    """The client's one connection to the gateway."""

    def __init__(self, client: Owner, sock: ssl.SSLSocket) -> None:
        super().__init__(client.loop, sock)
        self.client = client
        self.phase = "config"
        self.configured: asyncio.Future[protocol.Config] = client.loop.create_future()
        self.ended: asyncio.Future[str] = client.loop.create_future()

    def on_control(self, kind: int, payload: memoryview) -> None:
        msg = protocol.check_order(protocol.CLIENT_EXPECTS, self.phase, kind)
        if msg == MsgType.CONFIG:
            config = protocol.decode_config(payload)
            if self.phase == "data":  # the gateway reloaded its settings
                self.client.on_update(self, config)
                return
            self.phase = "data"
            if not self.configured.done():
                self.configured.set_result(config)
        elif msg in (MsgType.ERROR, MsgType.BYE):
            reason, retry = protocol.decode_reason(payload)
            text = f"gateway {'refused us' if msg == MsgType.ERROR else 'said goodbye'}: {reason}"
            if not retry:
                self._fail(Refused(text))
            self.close(text, send_error=False)

    def on_packets(self, packets: list[memoryview]) -> None:
        if self.phase != "data":
            raise ProtocolError("DATA out of order: expected CONFIG (config phase)")
        tun = self.client.tunnel.tun
        if tun is None:  # CONFIG came, and the TUN it asks for is not open yet
            self.counters.dropped_queue += len(packets)
            return
        fd, write = tun.fd, os.write
        for packet in packets:
            try:
                write(fd, packet)
            except BlockingIOError:
                self.counters.dropped_queue += 1
            except OSError as exc:
                self.counters.dropped_invalid += 1
                if self.counters.dropped_invalid == 1:
                    log.warn("drop", why=explain_write_error(exc, packet, tun=tun))

    def on_drained(self) -> None:
        self.client.resume_tun()

    def _fail(self, exc: BaseException) -> None:
        if not self.configured.done():
            self.configured.set_exception(exc)
        if not self.ended.done():
            self.ended.set_exception(exc)

    def on_closed(self, reason: str) -> None:
        if self.phase == "config" and _looks_like_refusal(reason):
            self._fail(Refused(f"gateway refused us during login: {reason}"))
        self._fail(Disconnected(reason))
        self.client.on_link_closed(self)


def _looks_like_refusal(reason: str) -> bool:
    """TLS 1.3: the server checks our certificate after our handshake is done; its verdict
    arrives as an alert on our first read."""
    words = ("certificate", "alert", "unknown ca", "revoked", "expired")
    return any(w in reason.lower() for w in words)
