"""The gateway: accepts TLS clients, leases addresses, and moves packets between them and its TUN.

One event loop. Control work (handshakes, HELLO, password checks, timers) runs as coroutines;
packets move in reader callbacks on the raw TUN fd and on each session's socket, a batch per
wake-up. A session that misbehaves is closed with a reason; the others never notice.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import os
import signal
import socket
import ssl
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from vpn import auth, control, log, protocol, tls
from vpn.channel import Channel, Counters, handshake, tune_socket
from vpn.config import (
    ConfigError,
    ServerConfig,
    parse_client_subnets,
    parse_endpoint,
    require_tls_files,
)
from vpn.netconf import NetConf
from vpn.pool import AddressPool, PoolExhausted, RouteTable, source_allowed
from vpn.protocol import MsgType, ProtocolError
from vpn.switch import Switch
from vpn.tun import Tun, TunError, explain_write_error, open_tun, supports_offload

TUN_READ = 65536 + 64
TUN_BUDGET = 128  # packets per wake-up
TUN_BATCH_BYTES = 1 << 19  # flush sessions after this much, to bound latency
DROP_LOG_INTERVAL = 5.0
# IPv4 header fields the hot loops need, read in one call: version/IHL, source, destination.
_IPV4_ADDRESSES = struct.Struct("!B11x4s4s")
_IPV4_DESTINATION = struct.Struct("!B15x4s")


class Session(Channel):
    """One connected client, from the end of its TLS handshake to its goodbye."""

    def __init__(self, gateway: Gateway, sock: ssl.SSLSocket, identity: str, peer: str) -> None:
        super().__init__(gateway.loop, sock)
        self.gateway = gateway
        self.identity = identity
        self.peer = peer
        self.phase = "hello"
        self.address: ipaddress.IPv4Address | None = None
        self.address_packed = b""
        self.subnets: tuple[ipaddress.IPv4Network, ...] = ()
        self.subnet_masks: tuple[tuple[int, int], ...] = ()
        self.dirty = False
        self.user = ""
        self.mac: bytes | None = None  # layer-2 mode: the one source MAC it may use
        self._last_drop_log = 0.0
        self.offset = gateway.offset
        self.deadline = gateway.loop.call_later(gateway.config.handshake_timeout, self._expire)

    def _expire(self) -> None:
        if self.phase != "data":
            self.close(f"no HELLO within {self.gateway.config.handshake_timeout:g} s")

    # -- control -------------------------------------------------------------------------------
    def on_control(self, kind: int, payload: memoryview) -> None:
        msg = protocol.check_order(protocol.SERVER_EXPECTS, self.phase, kind)
        if msg == MsgType.HELLO:
            self.phase = "auth"
            hello = protocol.decode_hello(payload)
            self.gateway.loop.create_task(self.gateway.admit(self, hello))
        elif msg == MsgType.BYE:
            reason, _ = protocol.decode_reason(payload)
            self.close(f"client said goodbye ({reason or 'no reason'})", send_error=False)
        # KEEPALIVE: last_rx is already updated by the read

    # -- packets from the client into the TUN (anti-spoofing on every packet) ------------------
    def on_packets(self, packets: list[memoryview]) -> None:
        gateway = self.gateway
        if self.phase != "data":
            raise ProtocolError(f"DATA out of order: expected HELLO ({self.phase} phase)")
        if gateway.switch is not None:
            gateway.switch.from_session(self, packets)
            return
        fd, off, own, masks = gateway.tun.fd, self.offset, self.address_packed, self.subnet_masks
        peers = gateway.routes.hosts
        write = os.write
        addresses = _IPV4_ADDRESSES.unpack_from
        counters = self.counters
        touched: list[Session] = []
        written = 0
        for packet in packets:
            # Every packet's IPv4 header, also a GSO super-packet's (after the virtio header).
            if len(packet) < off + 20:
                counters.dropped_invalid += 1
                continue
            first, source, destination = addresses(packet, off)
            if first >> 4 != 4:
                counters.dropped_invalid += 1
                continue
            if source != own and not source_allowed(source, own, masks):
                counters.dropped_spoofed += 1
                self.log_drop("spoofed source", source)
                continue
            peer = peers.get(destination)
            if peer is not None and peer is not self:
                if not gateway.config.client_to_client:
                    counters.dropped_filtered += 1
                    continue
                if peer.queue_packet(packet) and not peer.dirty:
                    peer.dirty = True
                    touched.append(peer)
                continue
            try:
                write(fd, packet)
                written += 1
            except BlockingIOError:
                counters.dropped_queue += 1
            except OSError as exc:
                counters.dropped_invalid += 1
                self.log_drop(explain_write_error(exc, packet, tun=gateway.tun), b"")
        for peer in touched:
            peer.dirty = False
            peer.flush()
        if written:
            # A TUN write runs the kernel's forwarding at once: replies and TCP ACKs from the
            # LAN may already wait in the TUN. Read them when this read wake-up ends.
            self.after_read = gateway.on_tun_readable

    def log_drop(self, what: str, source: bytes) -> None:
        now = time.monotonic()
        if now - self._last_drop_log < DROP_LOG_INTERVAL:
            return
        self._last_drop_log = now
        fields: dict[str, Any] = {"identity": self.identity, "why": what}
        if source:
            fields["source"] = str(ipaddress.IPv4Address(source))
        log.warn(
            "drop",
            **fields,
            **{k: v for k, v in self.counters.as_dict().items() if k.startswith("dropped")},
        )

    def on_closed(self, reason: str) -> None:
        self.deadline.cancel()
        self.gateway.forget(self, reason)

    def status(self) -> dict[str, Any]:
        return {
            "identity": self.identity,
            "user": self.user,
            "address": str(self.address) if self.address else "",
            "subnets": [str(s) for s in self.subnets],
            "peer": self.peer,
            "phase": self.phase,
            "connected_since": self.connected_at,
            **self.counters.as_dict(),
        }


class Gateway:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        require_tls_files(config, "server")
        self.bind = parse_endpoint(config.listen, "--listen")
        try:
            self.pool = AddressPool(ipaddress.IPv4Network(config.pool))
            self.pushed_routes = tuple(ipaddress.IPv4Network(r) for r in config.route)
        except ValueError as exc:
            raise ConfigError(f"--pool/--route: {exc}") from None
        self.client_subnets = parse_client_subnets(config.client_subnet)
        self.prefixlen = self.pool.network.prefixlen
        self.switch: Switch | None = None
        if config.tap:
            self.switch = Switch(self)
            try:
                network = ipaddress.IPv4Network(config.tap_network or config.pool)
            except ValueError as exc:
                raise ConfigError(f"--tap-network: {exc}") from None
            if not self.pool.network.subnet_of(network):
                raise ConfigError(f"--pool {config.pool} must lie inside --tap-network {network}")
            self.prefixlen = network.prefixlen
        self.passwords = auth.PasswordFile.load(config.passwords) if config.passwords else None
        self.context = tls.server_context(config.cert, config.key, config.ca, config.crl or None)
        self._crl_mtime = self._crl_stamp()
        self.loop = asyncio.get_running_loop()
        self.routes: RouteTable[Session] = RouteTable()
        self.sessions: dict[str, Session] = {}
        self.pending: set[Session] = set()
        self.handshaking = 0
        self.counters = Counters()
        self.started = time.time()
        self.tun: Tun | None = None
        self.offset = 0
        self.stopping = asyncio.Event()

    def _crl_stamp(self) -> float:
        return os.stat(self.config.crl).st_mtime if self.config.crl else 0.0

    def _reload_crl(self) -> None:
        """A revocation takes effect for the next connection, without a restart."""
        if not self.config.crl:
            return
        stamp = self._crl_stamp()
        if stamp != self._crl_mtime:
            c = self.config
            self.context = tls.server_context(c.cert, c.key, c.ca, c.crl)
            self._crl_mtime = stamp
            log.event("crl_reloaded", crl=c.crl)

    # -- admission -----------------------------------------------------------------------------
    def on_accept(self, listener: socket.socket) -> None:
        for _ in range(64):
            try:
                conn, addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warn("accept_failed", error=str(exc))
                return
            conn.setblocking(False)
            tune_socket(conn)
            self.loop.create_task(self.handshake(conn, f"{addr[0]}:{addr[1]}"))

    async def handshake(self, conn: socket.socket, peer: str) -> None:
        timeout = self.config.handshake_timeout
        self.handshaking += 1
        try:
            self._reload_crl()
            sslsock = self.context.wrap_socket(
                conn, server_side=True, do_handshake_on_connect=False
            )
        except (OSError, ssl.SSLError) as exc:
            self.handshaking -= 1
            log.warn("auth_failed", peer=peer, reason=str(exc))
            conn.close()
            return
        try:
            await asyncio.wait_for(handshake(self.loop, sslsock), timeout)
            identity = tls.peer_identity(sslsock)
        except TimeoutError:
            log.warn(
                "auth_failed", peer=peer, reason=f"TLS handshake not finished within {timeout:g} s"
            )
            sslsock.close()
            return
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.warn("auth_failed", peer=peer, reason=tls.explain(exc, sslsock))
            sslsock.close()
            return
        finally:
            self.handshaking -= 1
        session = Session(self, sslsock, identity, peer)
        if len(self.sessions) + len(self.pending) >= self.config.max_clients:
            log.warn("refused", peer=peer, identity=identity, reason="server full")
            session.close(
                f"server full: {self.config.max_clients} clients connected (--max-clients)"
            )
            return
        self.pending.add(session)

    async def admit(self, session: Session, hello: protocol.Hello) -> None:
        """HELLO arrived: check the password, lease an address, push the configuration."""
        if self.passwords is not None:
            if not hello.user:
                return self._refuse(
                    session, "this server requires a user name and password (--user)"
                )
            ok = await self.loop.run_in_executor(
                None, self.passwords.check, hello.user, hello.password
            )
            if session.closed:
                return
            if not ok:
                return self._refuse(session, f"wrong user name or password for user {hello.user!r}")
            session.user = hello.user
        if self.offset and protocol.FEATURE_OFFLOAD not in hello.features:
            return self._refuse(
                session,
                "this gateway uses TUN offloads (virtio_net_hdr) and the client did not offer "
                "them; run the server with --no-offload",
            )
        if self.switch is not None and protocol.FEATURE_TAP not in hello.features:
            return self._refuse(session, "this gateway runs in layer-2 (TAP) mode; the client "
                                "does not support it")  # fmt: skip
        previous = self.sessions.get(session.identity)
        if previous is not None:
            previous.close(f"replaced by a new connection from {session.peer}", kind=MsgType.BYE)
        requested = ipaddress.IPv4Address(hello.address) if hello.address else None
        try:
            address = self.pool.lease(session.identity, requested)
        except PoolExhausted as exc:
            session.close(str(exc))
            return
        session.address, session.address_packed = address, address.packed
        session.subnets = tuple(self.client_subnets.get(session.identity, ()))
        session.subnet_masks = tuple(
            (int(n.network_address), int(n.netmask)) for n in session.subnets
        )
        self.pending.discard(session)
        self.sessions[session.identity] = session
        self.routes.add_host(address, session)
        for subnet in session.subnets:
            self.routes.add_subnet(subnet, session)
        config = protocol.Config(
            address=ipaddress.IPv4Interface(f"{address}/{self.prefixlen}"),
            server_address=self.pool.server_address,
            mtu=self.config.mtu,
            routes=self.pushed_routes,
            keepalive=self.config.keepalive,
            dead_peer=self.config.dead_peer,
            offload=bool(self.offset),
            tap=self.switch is not None,
        )
        session.phase = "data"
        session.deadline.cancel()
        session.send_frame(config.encode())
        log.event(
            "connect",
            identity=session.identity,
            address=str(address),
            peer=session.peer,
            **({"user": session.user} if session.user else {}),
            **({"subnets": ",".join(map(str, session.subnets))} if session.subnets else {}),
        )

    def _refuse(self, session: Session, reason: str) -> None:
        log.warn("auth_failed", peer=session.peer, identity=session.identity, reason=reason)
        session.close(f"authentication failed: {reason}", retry=False)

    def forget(self, session: Session, reason: str) -> None:
        self.pending.discard(session)
        if self.sessions.get(session.identity) is session:
            del self.sessions[session.identity]
            self.pool.release(session.identity)
            self.routes.remove_target(session)
            if self.switch is not None:
                self.switch.forget(session)
        self.counters.add(session.counters)
        if session.address is not None:
            log.event(
                "disconnect",
                identity=session.identity,
                address=str(session.address),
                reason=reason,
                **session.counters.as_dict(),
            )
        else:
            log.warn(
                "auth_failed" if session.phase != "data" else "disconnect",
                peer=session.peer,
                identity=session.identity,
                reason=reason,
            )

    # -- packets from the TUN to the clients ---------------------------------------------------
    def on_tun_readable(self) -> None:
        fd, off = self.tun.fd, self.offset
        hosts, lookup = self.routes.hosts, self.routes.lookup
        read, readv = os.read, os.readv
        destination_of = _IPV4_DESTINATION.unpack_from
        touched: list[Session] = []
        taken = 0
        unroutable = 0
        # Packets are read straight into the send buffer of the session most likely to own
        # them (the only one, or the previous packet's): no copy when the guess is right.
        target: Session | None = None
        if len(self.sessions) == 1:
            (target,) = self.sessions.values()
            if target.phase != "data" or target.closed:
                target = None
        for _ in range(TUN_BUDGET):
            room = target.room() if target is not None else None
            try:
                if room is not None:
                    length = readv(fd, (room,))
                    packet: bytes | memoryview = room
                else:
                    packet = read(fd, TUN_READ)
                    length = len(packet)
            except BlockingIOError:
                break
            except OSError as exc:
                log.warn("tun_read_failed", tun=self.tun.name, error=str(exc))
                break
            if length < off + 20:
                unroutable += 1
                continue
            first, destination = destination_of(packet, off)
            if first >> 4 != 4:
                unroutable += 1
                continue
            session = hosts.get(destination) or lookup(destination)
            if session is None or session.phase != "data":
                unroutable += 1
                continue
            if session is target and room is not None:
                session.commit(length)
            elif session.queue_packet(packet[:length]):
                target = session
            else:
                continue
            if not session.dirty:
                session.dirty = True
                touched.append(session)
            taken += length
            if taken > TUN_BATCH_BYTES:
                break
        self.counters.dropped_unroutable += unroutable
        for session in touched:
            session.dirty = False
            session.flush()

    # -- timers --------------------------------------------------------------------------------
    async def keepalive(self) -> None:
        tick = min(1.0, self.config.keepalive / 2)
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            for session in list(self.sessions.values()):
                if now - session.last_rx > self.config.dead_peer:
                    session.close(f"dead peer: nothing received for {self.config.dead_peer:g} s")
                elif now - session.last_tx > self.config.keepalive:
                    session.send_frame(protocol.KEEPALIVE_FRAME)

    # -- status --------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        totals = self.counters.plus(*(s.counters for s in self.sessions.values()))
        return {
            "role": "server",
            "listen": self.config.listen,
            "tun": self.tun.name,
            "address": f"{self.pool.server_address}/{self.pool.network.prefixlen}",
            "offload": bool(self.offset),
            "mode": "tap" if self.switch else "tun",
            "started": self.started,
            "clients": [s.status() for s in self.sessions.values()],
            "handshaking": self.handshaking + len(self.pending),
            "totals": totals.as_dict(),
        }

    # -- lifetime ------------------------------------------------------------------------------
    def listen(self) -> socket.socket:
        host, port = self.bind
        listener = socket.socket(
            socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM
        )
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((host, port))
        except OSError as exc:
            listener.close()
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"listen {host}:{port}: address already in use — is another server running? "
                    "stop it or choose another --listen port"
                ) from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise ConfigError(
                    f"listen {host}:{port}: no interface on this host has that address"
                ) from None
            raise ConfigError(f"listen {host}:{port}: {exc.strerror}") from None
        listener.listen(1024)
        listener.setblocking(False)
        return listener

    def configure(self, net: NetConf) -> None:
        """TUN device, its address, forwarding and client-subnet routes (in the netlink thread)."""
        config = self.config
        if not net.ipv4_forwarding():
            if not config.enable_forwarding:
                raise ConfigError(
                    "IPv4 forwarding is off on this host (net.ipv4.ip_forward = 0), so packets "
                    "from clients would never reach the LAN; run with --enable-forwarding "
                    "or set the sysctl"
                )
            net.set_ipv4_forwarding(True)
        if self.switch is not None:  # layer 2: the TAP is a bridge port; the bridge has the address
            self.tun = open_tun(config.tun.replace("tun%d", "tap%d"), tap=True)
            net.set_link(self.tun.name, up=True, mtu=config.mtu)
            if config.bridge:
                net.set_master(self.tun.name, config.bridge)
            return
        offload = config.offload and supports_offload()
        if config.offload and not offload:
            log.warn("offload_unavailable", reason="kernel lacks TUN vnet_hdr offloads")
        self.tun = open_tun(config.tun, vnet_hdr=offload, offload=offload)
        self.offset = protocol.VNET_HDR_LEN if offload else 0
        net.disable_ipv6(self.tun.name)
        net.add_address(self.tun.name, f"{self.pool.server_address}/{self.pool.network.prefixlen}")
        net.set_link(self.tun.name, up=True, mtu=config.mtu)
        for subnets in self.client_subnets.values():
            for subnet in subnets:
                net.add_route(str(subnet), dev=self.tun.name)

    async def run(self) -> None:
        config = self.config
        # pyroute2 runs its own event loop per thread: all netlink work happens on one thread
        # of its own, never on this loop's.
        netlink = ThreadPoolExecutor(1, thread_name_prefix="netlink")
        net: NetConf | None = None
        try:
            net = await self.loop.run_in_executor(netlink, NetConf)
            await self.loop.run_in_executor(netlink, self.configure, net)
            with contextlib.ExitStack() as stack:
                listener = stack.enter_context(self.listen())
                status = await control.serve(config.control, self.status)
                stack.callback(status.close)
                reader = self.switch.from_tap if self.switch else self.on_tun_readable
                self.loop.add_reader(self.tun.fd, reader)
                stack.callback(self.loop.remove_reader, self.tun.fd)
                self.loop.add_reader(listener.fileno(), self.on_accept, listener)
                stack.callback(self.loop.remove_reader, listener.fileno())
                for sig in (signal.SIGTERM, signal.SIGINT):
                    self.loop.add_signal_handler(sig, self.stopping.set)
                    stack.callback(self.loop.remove_signal_handler, sig)
                timers = self.loop.create_task(self.keepalive())
                stack.callback(timers.cancel)
                log.event(
                    "listening",
                    listen=config.listen,
                    tun=self.tun.name,
                    mode="tap" if self.switch else "tun",
                    address="-" if self.switch else f"{self.pool.server_address}/{self.prefixlen}",
                    pool=str(self.pool.network),
                    routes=",".join(config.route) or "-",
                    offload=bool(self.offset),
                )
                await self.stopping.wait()
                for session in list(self.sessions.values()) + list(self.pending):
                    session.close("server shutting down", kind=MsgType.BYE)
        finally:
            if net is not None:
                await self.loop.run_in_executor(netlink, net.close)
            if self.tun is not None:
                self.tun.close()
            netlink.shutdown()
            log.event("stopped")


async def serve(config: ServerConfig) -> None:
    gateway = Gateway(config)
    await gateway.run()


__all__ = ["Gateway", "Session", "TunError", "serve"]
