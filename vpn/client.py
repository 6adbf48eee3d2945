"""The client: connect, authenticate, apply the pushed configuration, move packets, reconnect.

The TUN device and its routes outlive a broken connection: while the client reconnects, traffic
for the tunnel has nowhere else to go (no leak into the clear), and TCP sessions inside survive
because the gateway gives the same address back.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import random
import signal
import socket
import ssl
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from vpn import control, log, protocol, tls
from vpn.channel import Channel, Counters, handshake, tune_socket
from vpn.config import ClientConfig, ConfigError, parse_endpoint, require_tls_files
from vpn.netconf import NetConf
from vpn.protocol import MsgType, ProtocolError
from vpn.tun import Tun, explain_write_error, open_tun, supports_offload

TUN_READ = 65536 + 64
TUN_BUDGET = 128
MAX_BACKLOG = 1 << 20


class Refused(Exception):
    """The gateway refused our credentials, or we refused the gateway: retrying cannot help."""


class Disconnected(Exception):
    """The session ended; the reason is the message."""


class Link(Channel):
    """The client's one connection to the gateway."""

    def __init__(self, client: Client, sock: ssl.SSLSocket) -> None:
        super().__init__(client.loop, sock)
        self.client = client
        self.phase = "config"
        self.configured: asyncio.Future[protocol.Config] = client.loop.create_future()
        self.ended: asyncio.Future[str] = client.loop.create_future()

    def on_control(self, kind: int, payload: memoryview) -> None:
        msg = protocol.check_order(protocol.CLIENT_EXPECTS, self.phase, kind)
        if msg == MsgType.CONFIG:
            config = protocol.decode_config(payload)
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
        client = self.client
        fd, write = client.tun.fd, os.write
        for packet in packets:
            try:
                write(fd, packet)
            except BlockingIOError:
                self.counters.dropped_queue += 1
            except OSError as exc:
                self.counters.dropped_invalid += 1
                if self.counters.dropped_invalid == 1:
                    log.warn("drop", why=explain_write_error(exc, packet, tun=client.tun))

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


class Client:
    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        require_tls_files(config, "client")
        if not config.server:
            raise ConfigError("vpn client needs --server HOST:PORT (the gateway)")
        self.host, self.port = parse_endpoint(config.server, "--server")
        self.server_name = config.server_name or self.host
        self.context = tls.client_context(config.cert, config.key, config.ca, config.crl or None)
        self.name = config.name or _certificate_name(config.cert)
        self.password = _read_password(config)
        self.loop = asyncio.get_running_loop()
        self.link: Link | None = None
        self.applied: protocol.Config | None = None
        self.tun: Tun | None = None  # type: ignore[assignment]
        self.net: NetConf | None = None
        self.reading_tun = False
        self.state = "connecting"
        self.reconnects = 0
        self.started = time.time()
        self.counters = Counters()
        self.last_error = ""
        self.stopping = asyncio.Event()
        # pyroute2 runs its own event loop per thread: netlink work gets a thread of its own.
        self.netlink = ThreadPoolExecutor(1, thread_name_prefix="netlink")

    # -- one connection ------------------------------------------------------------------------
    async def connect(self) -> Link:
        timeout = self.config.connect_timeout
        infos = await self.loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        family, _, _, _, address = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(self.loop.sock_connect(sock, address), timeout)
            tune_socket(sock)
            sslsock = self.context.wrap_socket(
                sock, server_hostname=self.server_name, do_handshake_on_connect=False
            )
        except BaseException:
            sock.close()
            raise
        try:
            await asyncio.wait_for(handshake(self.loop, sslsock), timeout)
        except ssl.SSLCertVerificationError as exc:
            sslsock.close()
            raise Refused(f"we refused the gateway: {tls.explain(exc, sslsock)}") from None
        except BaseException:
            sslsock.close()
            raise
        link = Link(self, sslsock)
        features = {protocol.FEATURE_TAP}
        if self.config.offload and supports_offload():
            features.add(protocol.FEATURE_OFFLOAD)
        hello = protocol.Hello(
            version=protocol.VERSION,
            name=self.name,
            features=frozenset(features),
            user=self.config.user,
            password=self.password,
            address=str(self.applied.address.ip) if self.applied else "",
        )
        link.send_frame(hello.encode())
        try:
            config = await asyncio.wait_for(asyncio.shield(link.configured), timeout)
        except TimeoutError:
            link.close(f"no CONFIG from the gateway within {timeout:g} s")
            raise Disconnected(f"no CONFIG from the gateway within {timeout:g} s") from None
        except BaseException:
            link.close("login failed", send_error=False)
            raise
        self.pause_tun()
        await self.loop.run_in_executor(self.netlink, self.apply, config)
        return link

    def apply(self, config: protocol.Config) -> None:
        """Configure the TUN and routes; kept as they are when a reconnect pushes the same."""
        if self.applied == config:
            return
        self.teardown()
        stack = NetConf()
        try:
            name = self.config.tun.replace("tun%d", "tap%d") if config.tap else self.config.tun
            tun = open_tun(name, tap=config.tap, vnet_hdr=config.offload, offload=config.offload)
        except BaseException:
            stack.close()
            raise
        self.tun, self.net = tun, stack
        try:
            stack.disable_ipv6(tun.name)
            stack.add_address(tun.name, str(config.address))
            stack.set_link(tun.name, up=True, mtu=config.mtu)
            for route in config.routes:
                if not route.subnet_of(config.address.network):  # else already on the link
                    stack.add_route(str(route), dev=tun.name)
        except BaseException:
            self.teardown()
            raise
        self.applied = config
        log.event(
            "configured",
            tun=tun.name,
            address=str(config.address),
            routes=",".join(map(str, config.routes)) or "-",
            mtu=config.mtu,
            offload=config.offload,
        )

    def teardown(self) -> None:
        """Undo apply (in the netlink thread; the TUN reader is already paused)."""
        if self.net is not None:
            self.net.close()
            self.net = None
        if self.tun is not None:
            self.tun.close()
            self.tun = None
        self.applied = None

    # -- packets from the TUN to the gateway ---------------------------------------------------
    def on_tun_readable(self) -> None:
        link = self.link
        if link is None or link.closed or link.phase != "data":
            self.pause_tun()
            return
        fd, readv = self.tun.fd, os.readv
        room, commit = link.room, link.commit
        for _ in range(TUN_BUDGET):
            space = room()
            if space is None:
                break  # a full queue: send first
            try:
                length = readv(fd, (space,))  # straight into the send buffer, no copy
            except BlockingIOError:
                break
            except OSError as exc:
                log.warn("tun_read_failed", tun=self.tun.name, error=str(exc))
                break
            if length:
                commit(length)
            if link.out_len > MAX_BACKLOG:
                break
        link.flush()
        if link.pending is not None:
            self.pause_tun()  # resumed by on_drained: backpressure instead of a growing queue

    def pause_tun(self) -> None:
        if self.reading_tun and self.tun is not None:
            self.loop.remove_reader(self.tun.fd)
        self.reading_tun = False

    def resume_tun(self) -> None:
        if not self.reading_tun and self.tun is not None and self.link is not None:
            self.loop.add_reader(self.tun.fd, self.on_tun_readable)
            self.reading_tun = True

    def on_link_closed(self, link: Link) -> None:
        self.pause_tun()
        self.counters.add(link.counters)

    # -- the reconnect loop --------------------------------------------------------------------
    async def keepalive(self, link: Link, config: protocol.Config) -> None:
        tick = min(1.0, config.keepalive / 2)
        while not link.closed:
            await asyncio.sleep(tick)
            now = time.monotonic()
            if now - link.last_rx > config.dead_peer:
                link.close(f"dead peer: nothing from the gateway for {config.dead_peer:g} s")
            elif now - link.last_tx > config.keepalive:
                link.send_frame(protocol.KEEPALIVE_FRAME)

    async def session(self) -> None:
        self.state = "connecting"
        link = await self.connect()
        self.link = link
        self.state = "connected"
        log.event("connected", server=f"{self.host}:{self.port}", address=str(self.applied.address))
        self.resume_tun()
        timer = self.loop.create_task(self.keepalive(link, self.applied))
        try:
            await link.ended
        finally:
            timer.cancel()
            if not link.closed:
                link.close("client stopping", kind=MsgType.BYE)
            self.link = None

    async def reconnect_forever(self) -> None:
        delay = self.config.reconnect_min
        while True:
            began = time.monotonic()
            try:
                await self.session()
            except Refused:
                raise
            except (Disconnected, OSError, ssl.SSLError, ProtocolError, TimeoutError) as exc:
                self.last_error = (
                    tls.explain(exc)
                    if isinstance(exc, ssl.SSLError)
                    else str(exc) or type(exc).__name__
                )
            if time.monotonic() - began > 2 * self.config.reconnect_max:
                delay = self.config.reconnect_min  # it was up for a while: start over quickly
            self.state = "reconnecting"
            self.reconnects += 1
            wait = delay * random.uniform(0.8, 1.2)
            log.warn("reconnecting", reason=self.last_error, delay=f"{wait:.2f}")
            await asyncio.sleep(wait)
            delay = min(delay * 2, self.config.reconnect_max)

    def status(self) -> dict[str, Any]:
        link = self.link
        # A closed link's counts are already in self.counters (on_link_closed).
        live = (link.counters,) if link is not None and not link.closed else ()
        counters = self.counters.plus(*live)
        return {
            "role": "client",
            "server": f"{self.host}:{self.port}",
            "state": self.state,
            "tun": self.tun.name if self.tun else "",
            "address": str(self.applied.address) if self.applied else "",
            "routes": [str(r) for r in self.applied.routes] if self.applied else [],
            "connected_since": link.connected_at if link else None,
            "reconnects": self.reconnects,
            "last_error": self.last_error,
            **counters.as_dict(),
        }

    async def run(self) -> int:
        status = await control.serve(self.config.control, self.status)
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self.stopping.set)
        work = self.loop.create_task(self.reconnect_forever())
        stop = self.loop.create_task(self.stopping.wait())
        try:
            await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
            if work.done():
                work.result()  # raises Refused
            return 0
        except Refused as exc:
            log.error("refused", reason=str(exc))
            return 2
        finally:
            for task in (work, stop):
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            if self.link is not None:
                self.link.close("client stopping", kind=MsgType.BYE)
            self.pause_tun()
            await self.loop.run_in_executor(self.netlink, self.teardown)
            self.netlink.shutdown()
            status.close()
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.loop.remove_signal_handler(sig)
            log.event("stopped")


def _certificate_name(path: str) -> str:
    """Our own CN, the name we introduce ourselves with in HELLO."""
    from cryptography.x509.oid import NameOID

    from vpn.pki import load_cert

    names = load_cert(Path(path)).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else "client"


def _read_password(config: ClientConfig) -> str:
    if not config.user:
        return ""
    if config.password_file:
        try:
            with open(config.password_file) as fh:
                return fh.readline().rstrip("\n")
        except OSError as exc:
            raise ConfigError(f"--password-file {config.password_file}: {exc.strerror}") from None
    if not sys.stdin.isatty():
        raise ConfigError(
            "--user needs a password: run in a terminal to be asked, or pass --password-file FILE"
        )
    return getpass.getpass(f"password for {config.user}: ")


async def serve(config: ClientConfig) -> int:
    client = Client(config)
    return await client.run()
