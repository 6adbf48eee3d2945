"""The gateway: accepts TLS clients, leases addresses, and moves packets between them and its TUN.

One event loop. Control work (handshakes, HELLO, password checks, timers) runs as coroutines;
packets move in reader callbacks on the raw TUN fd and on each session's socket, a batch per
wake-up (`vpn.datapath`). A session that misbehaves is closed with a reason; the others never
notice. `vpn.server.runtime` wires this object into the event loop and undoes it on the way out.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import time
from pathlib import Path
from typing import Any

from vpn import log, protocol
from vpn.config import (
    ServerConfig,
    Subnet,
    parse_client_subnets,
    parse_endpoint,
    parse_pool6,
    parse_pushed,
    require_tls_files,
)
from vpn.credentials import tls
from vpn.credentials.passwords import PasswordFile
from vpn.datapath.counters import Counters
from vpn.datapath.handshake import handshake, tune_socket
from vpn.datapath.router import Router
from vpn.datapath.sessions import Forwarder, Session, SessionTable
from vpn.datapath.switch import Switch
from vpn.errors import ConfigError, PoolExhausted
from vpn.iface.netconf import NetConf
from vpn.iface.tun import Tun
from vpn.pool import AddressPool
from vpn.server import host, identity
from vpn.server.admission import AdmissionCounters, Ticket, limits_from, throttled_reason
from vpn.server.revocation import CrlWatcher


def masks(subnets: tuple[Subnet, ...], version: int) -> tuple[tuple[int, int], ...]:
    """The subnets of one IP version as (network, mask) integers, for the anti-spoofing check."""
    return tuple((int(n.network_address), int(n.netmask)) for n in subnets if n.version == version)


class Gateway:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        require_tls_files(config, "server")
        self.bind = parse_endpoint(config.listen, "--listen")
        try:
            self.pool: AddressPool[ipaddress.IPv4Address] = AddressPool(
                ipaddress.IPv4Network(config.pool)
            )
        except ValueError as exc:
            raise ConfigError(f"--pool: {exc}") from None
        network6 = parse_pool6(config)
        self.pool6: AddressPool[ipaddress.IPv6Address] | None = (
            AddressPool(network6) if network6 is not None else None
        )
        self.pushed = parse_pushed(config)  # routes and name servers; a reload changes them
        self.client_subnets = parse_client_subnets(config.client_subnet, ipv6=bool(network6))
        self.prefixlen = self.pool.network.prefixlen
        self.tap = config.tap
        if config.tap:
            try:
                network = ipaddress.IPv4Network(config.tap_network or config.pool)
            except ValueError as exc:
                raise ConfigError(f"--tap-network: {exc}") from None
            if not ipaddress.IPv4Network(config.pool).subnet_of(network):
                raise ConfigError(f"--pool {config.pool} must lie inside --tap-network {network}")
            self.prefixlen = network.prefixlen
        self.passwords = PasswordFile.load(Path(config.passwords)) if config.passwords else None
        self.crl = CrlWatcher(
            Path(config.crl) if config.crl else None, Path(config.ca), self._tls_context
        )
        self.context = self.crl.context
        self.loop = asyncio.get_running_loop()
        self.table = SessionTable()
        self.handshaking = 0
        self.handshakes = 0  # TLS handshakes begun
        self.failures: dict[str, int] = {}  # handshakes and logins that failed, by reason
        self.counters = Counters()
        self.admission = AdmissionCounters()
        self.limits, self.throttle = limits_from(config, self.admission)
        self.tickets: dict[Session, Ticket] = {}  # logging in: released once in or gone
        self.started = time.time()
        self.tun: Tun | None = None
        self.forwarder: Forwarder | None = None  # once the device is open: Router or Switch
        self.offset = 0
        self.stopping = asyncio.Event()

    def _tls_context(self) -> ssl.SSLContext:
        c = self.config
        return tls.server_context(
            Path(c.cert), Path(c.key), Path(c.ca), Path(c.crl) if c.crl else None
        )

    def reload_crl(self, force: bool = False) -> None:
        """A revocation takes effect without a restart: for the next connection, and for the
        live sessions of the revoked certificates, which end. Never raises (a broken CRL
        leaves the previous one in force)."""
        if self.crl.poll(force):
            self.context = self.crl.context
            identity.end_revoked(self.table.everyone(), self.crl.revoked)

    # -- admission -----------------------------------------------------------------------------
    def on_accept(self, conn: socket.socket, peer: str, ticket: Ticket) -> None:
        """A connection within the pending caps (`Acceptor`); `ticket` is released when it
        has logged in or is gone."""
        conn.setblocking(False)
        tune_socket(conn)
        self.loop.create_task(self._login(conn, peer, ticket))

    async def _login(self, conn: socket.socket, peer: str, ticket: Ticket) -> None:
        session = None
        try:
            session = await self.handshake(conn, peer)
        finally:
            if session is None or session.closed:
                ticket.release()
            else:
                self.tickets[session] = ticket

    async def handshake(self, conn: socket.socket, peer: str) -> Session | None:
        timeout = self.config.handshake_timeout
        self.handshaking += 1
        self.handshakes += 1
        try:
            self.reload_crl()
            sslsock = self.context.wrap_socket(
                conn, server_side=True, do_handshake_on_connect=False
            )
        except (OSError, ssl.SSLError) as exc:
            self.handshaking -= 1
            self.failed("tls")
            log.warn("auth_failed", peer=peer, reason=str(exc))
            conn.close()
            return None
        try:
            await asyncio.wait_for(handshake(self.loop, sslsock), timeout)
            identity = tls.peer_identity(sslsock)
        except TimeoutError:
            self.failed("timeout")
            log.warn(
                "auth_failed", peer=peer, reason=f"TLS handshake not finished within {timeout:g} s"
            )
            sslsock.close()
            return None
        except (OSError, ssl.SSLError, ValueError) as exc:
            self.failed("certificate" if isinstance(exc, ssl.SSLError) else "tls")
            log.warn("auth_failed", peer=peer, reason=tls.explain(exc, sslsock))
            sslsock.close()
            return None
        finally:
            self.handshaking -= 1
        assert self.forwarder is not None  # connections are accepted once the device is open
        session = Session(
            self.loop,
            sslsock,
            identity,
            peer,
            forwarder=self.forwarder,
            offset=self.offset,
            handshake_timeout=timeout,
            on_hello=self.admit,
            on_gone=self.forget,
        )
        if len(self.table) >= self.config.max_clients:
            self.failed("server_full")
            log.warn("refused", peer=peer, identity=identity, reason="server full")
            session.close(
                f"server full: {self.config.max_clients} clients connected (--max-clients)"
            )
            return None
        self.table.pending.add(session)
        return session

    async def admit(self, session: Session, hello: protocol.Hello) -> None:
        """HELLO arrived: check the password, lease an address, push the configuration."""
        if self.passwords is not None:
            if not hello.user:
                return self._refuse(
                    session, "this server requires a user name and password (--user)"
                )
            source = session.peer.rpartition(":")[0]
            if wait := self.throttle.wait(hello.user, source):
                return self._throttled(session, hello.user, source, wait)
            ok = await self.loop.run_in_executor(
                None, self.passwords.check, hello.user, hello.password
            )
            if session.closed:
                return
            if not ok:
                self.throttle.failed(hello.user, source)
                self.admission.auth_refused += 1
                return self._refuse(session, f"wrong user name or password for user {hello.user!r}")
            self.throttle.succeeded(hello.user)
            session.user = hello.user
        if self.offset and protocol.FEATURE_OFFLOAD not in hello.features:
            return self._refuse(
                session,
                "this gateway uses TUN offloads (virtio_net_hdr) and the client did not offer "
                "them; run the server with --no-offload",
            )
        if self.tap and protocol.FEATURE_TAP not in hello.features:
            return self._refuse(session, "this gateway runs in layer-2 (TAP) mode; the client "
                                "does not support it")  # fmt: skip
        if session.closed:
            return
        refusal = identity.bind(self.table, session, self.crl.revoked)
        if refusal is not None:
            return self._refuse(session, refusal)
        requested = ipaddress.IPv4Address(hello.address) if hello.address else None
        try:
            address = self.pool.lease(session.identity, requested)
        except PoolExhausted as exc:
            session.close(str(exc))
            return
        if self.pool6 is not None:
            requested6 = ipaddress.IPv6Address(hello.address6) if hello.address6 else None
            try:
                address6 = self.pool6.lease(session.identity, requested6)
            except PoolExhausted as exc:
                self.pool.release(session.identity)
                session.close(str(exc))
                return
            session.address6, session.address6_packed = address6, address6.packed
        session.address, session.address_packed = address, address.packed
        session.subnets = tuple(self.client_subnets.get(session.identity, ()))
        session.subnet_masks = masks(session.subnets, 4)
        session.subnet6_masks = masks(session.subnets, 6)
        self.table.add(session, address)
        self._logged_in(session)
        session.phase = "data"
        session.deadline.cancel()
        session.send_frame(self.config_for(session).encode())
        fields: dict[str, Any] = {"identity": session.identity, "address": str(address)}
        if session.address6 is not None:
            fields["address6"] = str(session.address6)
        fields["peer"] = session.peer
        if session.user:
            fields["user"] = session.user
        if session.subnets:
            fields["subnets"] = ",".join(map(str, session.subnets))
        log.event("connect", **fields)

    def config_for(self, session: Session) -> protocol.Config:
        """The CONFIG of a logged-in session: at login, and again after a reload."""
        address, address6 = session.address, session.address6
        assert address is not None
        pool6 = self.pool6
        return protocol.Config(
            address=ipaddress.IPv4Interface(f"{address}/{self.prefixlen}"),
            server_address=self.pool.server_address,
            mtu=self.config.mtu,
            routes=self.pushed.routes,
            keepalive=self.config.keepalive,
            dead_peer=self.config.dead_peer,
            offload=bool(self.offset),
            tap=self.tap,
            dns=self.pushed.dns,
            search=self.pushed.search,
            address6=None
            if address6 is None or pool6 is None
            else ipaddress.IPv6Interface(f"{address6}/{pool6.network.prefixlen}"),
            server_address6=pool6.server_address if pool6 is not None else None,
            routes6=self.pushed.routes6 if pool6 is not None else (),
        )

    def failed(self, reason: str) -> None:
        self.failures[reason] = self.failures.get(reason, 0) + 1

    def _refuse(self, session: Session, reason: str) -> None:
        self.failed("refused")
        log.warn("auth_failed", peer=session.peer, identity=session.identity, reason=reason)
        session.close(f"authentication failed: {reason}", retry=False)

    def _throttled(self, session: Session, user: str, source: str, wait: float) -> None:
        """Refused before scrypt runs. retry=True: the client keeps its own reconnect backoff,
        and a right password gets in once the wait is over."""
        self.admission.auth_throttled += 1
        self.failed("throttled")
        reason = throttled_reason(user, source, wait)
        log.warn("auth_throttled", peer=session.peer, identity=session.identity, reason=reason)
        session.close(f"authentication failed: {reason}", retry=True)

    def _logged_in(self, session: Session) -> None:
        ticket = self.tickets.pop(session, None)
        if ticket is not None:
            ticket.release()

    def forget(self, session: Session, reason: str) -> None:
        self._logged_in(session)  # or gone: either way no longer pending
        if self.table.remove(session):
            self.pool.release(session.identity)
            if self.pool6 is not None:
                self.pool6.release(session.identity)
            session.forwarder.forget(session)
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

    # -- status --------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        sessions = self.table.connected()
        totals = self.counters.plus(*(s.counters for s in sessions))
        return {
            "role": "server",
            "listen": self.config.listen,
            "tun": self.tun.name if self.tun is not None else "",
            "address": f"{self.pool.server_address}/{self.pool.network.prefixlen}",
            "address6": self._address6() or "",
            "offload": bool(self.offset),
            "mode": "tap" if self.tap else "tun",
            "started": self.started,
            "clients": [s.status() for s in sessions],
            "handshaking": self.handshaking + len(self.table.pending),
            "totals": totals.as_dict(),
            "admission": {"pending": self.limits.total, **self.admission.as_dict()},
        }

    # -- lifetime ------------------------------------------------------------------------------
    def configure(self, net: NetConf) -> None:
        """TUN device, its address, forwarding and client-subnet routes (in the netlink thread)."""
        host.enable_forwarding(self.config, net)
        self.tun, self.offset = host.open_device(self.config)
        address = ipaddress.IPv4Interface(
            f"{self.pool.server_address}/{self.pool.network.prefixlen}"
        )
        address6 = self._address6()
        host.configure_device(
            self.config,
            net,
            self.tun,
            address,
            self.client_subnets,
            ipaddress.IPv6Interface(address6) if address6 else None,
        )

    def _address6(self) -> str | None:
        """The gateway's own IPv6 address on its TUN, with the pool's prefix (--pool6)."""
        if self.pool6 is None:
            return None
        return f"{self.pool6.server_address}/{self.pool6.network.prefixlen}"

    def forwarder_for(self, device: Tun) -> Forwarder:
        if self.tap:
            return Switch(device, self.table)
        return Router(
            device,
            self.offset,
            self.table,
            self.counters,
            client_to_client=self.config.client_to_client,
        )
