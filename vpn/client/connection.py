"""The client: connect, authenticate, apply the pushed configuration, move packets, reconnect.

The TUN device and its routes (`vpn.client.tunnel`) outlive a broken connection, and TCP
sessions inside survive because the gateway gives the same address back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from vpn import control, log, protocol
from vpn.client import resolver
from vpn.client.link import Link
from vpn.client.login import certificate_name, read_password
from vpn.client.tunnel import Tunnel
from vpn.config import ClientConfig, parse_endpoint, require_tls_files
from vpn.credentials import tls
from vpn.datapath.counters import Counters
from vpn.datapath.handshake import handshake, tune_socket
from vpn.datapath.keepalive import keep_alive
from vpn.errors import ConfigError, Disconnected, ProtocolError, Refused
from vpn.iface.tun import supports_offload
from vpn.protocol import MsgType

TUN_READ = 65536 + 64
TUN_BUDGET = 128
MAX_BACKLOG = 1 << 20


class Client:
    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        require_tls_files(config, "client")
        if not config.server:
            raise ConfigError("vpn client needs --server HOST:PORT (the gateway)")
        self.host, self.port = parse_endpoint(config.server, "--server")
        self.server_name = config.server_name or self.host
        self.context = tls.client_context(
            Path(config.cert),
            Path(config.key),
            Path(config.ca),
            Path(config.crl) if config.crl else None,
        )
        self.name = config.name or certificate_name(config.cert)
        self.password = read_password(config)
        self.loop = asyncio.get_running_loop()
        self.link: Link | None = None
        self.tunnel = Tunnel(config.tun, self._resolver if config.dns else None)
        self.reading_tun = False
        self.state = "connecting"
        self.reconnects = 0
        self.started = time.time()
        self.counters = Counters()
        self.last_error = ""
        self.stopping = asyncio.Event()
        # pyroute2 runs its own event loop per thread: netlink work gets a thread of its own.
        self.netlink = ThreadPoolExecutor(1, thread_name_prefix="netlink")

    def _resolver(self, ifname: str) -> resolver.Resolver:
        return resolver.choose(
            Path(self.config.resolv_conf), Path(self.config.dns_state_dir), ifname
        )

    def on_update(self, link: Link, config: protocol.Config) -> None:
        """A CONFIG in the data phase: new routes or name servers, same address and device."""
        applied = self.tunnel.applied
        if applied is not None and not applied.same_link(config):
            link.close(
                "the gateway changed the address, MTU or mode of a live tunnel: reconnecting"
            )
            return
        task = self.loop.run_in_executor(self.netlink, self.tunnel.apply, config)
        task.add_done_callback(self._updated)

    def _updated(self, task: asyncio.Future[None]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.last_error = str(exc)
            log.error("update_failed", reason=str(exc))

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
            address=str(applied.address.ip) if (applied := self.tunnel.applied) else "",
            address6=str(applied.address6.ip) if applied and applied.address6 else "",
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
        await self.loop.run_in_executor(self.netlink, self.tunnel.apply, config)
        return link

    # -- packets from the TUN to the gateway ---------------------------------------------------
    def on_tun_readable(self) -> None:
        link = self.link
        if link is None or link.closed or link.phase != "data":
            self.pause_tun()
            return
        tun = self.tunnel.tun
        if tun is None:
            return
        fd, readv = tun.fd, os.readv
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
                log.warn("tun_read_failed", tun=tun.name, error=str(exc))
                break
            if length:
                commit(length)
            if link.out_len > MAX_BACKLOG:
                break
        link.flush()
        if link.pending is not None:
            self.pause_tun()  # resumed by on_drained: backpressure instead of a growing queue

    def pause_tun(self) -> None:
        if self.reading_tun and (tun := self.tunnel.tun) is not None:
            self.loop.remove_reader(tun.fd)
        self.reading_tun = False

    def resume_tun(self) -> None:
        if not self.reading_tun and (tun := self.tunnel.tun) is not None and self.link is not None:
            self.loop.add_reader(tun.fd, self.on_tun_readable)
            self.reading_tun = True

    def on_link_closed(self, link: Link) -> None:
        self.pause_tun()
        self.counters.add(link.counters)

    # -- the reconnect loop --------------------------------------------------------------------
    async def session(self) -> None:
        self.state = "connecting"
        link = await self.connect()
        config = link.configured.result()
        self.link = link
        self.state = "connected"
        log.event(
            "connected",
            server=f"{self.host}:{self.port}",
            address=str(config.address),
            address6=str(config.address6 or "-"),
        )
        self.resume_tun()
        timer = self.loop.create_task(
            keep_alive(
                lambda: () if link.closed else (link,),
                config.keepalive,
                config.dead_peer,
                f"nothing from the gateway for {config.dead_peer:g} s",
            )
        )
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
            "tun": self.tunnel.tun.name if self.tunnel.tun else "",
            "address": str(applied.address) if (applied := self.tunnel.applied) else "",
            "address6": str(applied.address6) if applied and applied.address6 else "",
            "routes": [str(r) for r in applied.routes] if applied else [],
            "routes6": [str(r) for r in applied.routes6] if applied and applied.address6 else [],
            "dns": [str(a) for a in applied.dns] if applied else [],
            "search": list(applied.search) if applied else [],
            "updates": self.tunnel.updates,
            "connected_since": link.connected_at if link else None,
            "reconnects": self.reconnects,
            "last_error": self.last_error,
            **counters.as_dict(),
        }

    async def run(self) -> int:
        # A previous run that crashed may have left its name servers: always put them back.
        saved = resolver.ResolvConf(Path(self.config.resolv_conf), Path(self.config.dns_state_dir))
        saved.recover()
        status = await control.serve(self.config.control, self.status, role="client")
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
            await self.loop.run_in_executor(self.netlink, self.tunnel.teardown)
            self.netlink.shutdown()
            status.close()
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.loop.remove_signal_handler(sig)
            log.event("stopped")


async def serve(config: ClientConfig) -> int:
    client = Client(config)
    return await client.run()
