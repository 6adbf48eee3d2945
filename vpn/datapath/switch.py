"""Layer-2 mode: the gateway's TAP device is a port of a bridge on the LAN, and each session is
another port. Frames go where the destination MAC was last seen; broadcasts go everywhere.

Anti-spoofing at layer 2: a session may source frames from one MAC only — the first unicast MAC
it sends from, and only if no other session owns it and it has not been seen on the LAN side
(source MACs of frames read from the TAP). Without that, a client could claim a LAN host's or
another client's MAC and have the bridge (and this switch) divert that station's traffic to it.
Its IPv4 and ARP frames must also carry its leased address as sender. IPv6 crosses as it is,
from the link's own addresses only — a link-local source, or none (`::`, duplicate address
detection) — since layer-2 mode leases no IPv6 address. Anything else is dropped and counted
(`dropped_spoofed`), and logged at most once per DROP_LOG_INTERVAL per session.

Residual: a client can still claim a LAN MAC that has not sent a frame since the gateway
started; when that station then speaks, the conflict is logged (`mac_conflict`). And, as on any
Ethernet without RA guard or ND inspection, it can claim another station's link-local IPv6
address in neighbour discovery.
"""

from __future__ import annotations

import os
import time

from vpn import log
from vpn.datapath.sessions import DROP_LOG_INTERVAL, Session, SessionTable
from vpn.iface.tun import Tun

ETH_HLEN = 14
ETHERTYPE_IPV4 = b"\x08\x00"
ETHERTYPE_ARP = b"\x08\x06"
ETHERTYPE_IPV6 = b"\x86\xdd"
UNSPECIFIED6 = bytes(16)
TAP_READ = 65536
TAP_BUDGET = 128
# LAN-side MACs remembered; the oldest is forgotten beyond this, so a flood of forged source
# MACs on the LAN cannot grow the gateway's memory without bound.
LAN_MACS_MAX = 8192


def sender_address(frame: bytes | memoryview) -> bytes | None:
    """The IPv4 sender of an IPv4 or ARP frame; None for other ethertypes."""
    ethertype = bytes(frame[12:14])
    if ethertype == ETHERTYPE_IPV4 and len(frame) >= ETH_HLEN + 20:
        return bytes(frame[ETH_HLEN + 12 : ETH_HLEN + 16])
    if ethertype == ETHERTYPE_ARP and len(frame) >= ETH_HLEN + 28:
        return bytes(frame[ETH_HLEN + 14 : ETH_HLEN + 18])  # ARP sender protocol address
    if ethertype == ETHERTYPE_IPV6 and len(frame) >= ETH_HLEN + 40:
        return bytes(frame[ETH_HLEN + 8 : ETH_HLEN + 24])  # IPv6 source address
    return None


def link_own6(source: bytes) -> bool:
    """An IPv6 source a station may use on a link it has no lease on: fe80::/10 or ::."""
    return (source[0] == 0xFE and source[1] & 0xC0 == 0x80) or source == UNSPECIFIED6


def _mac(mac: bytes) -> str:
    return mac.hex(":")


class Switch:
    def __init__(self, tap: Tun, sessions: SessionTable) -> None:
        self.tap = tap
        self.sessions = sessions
        self.table: dict[bytes, Session] = {}  # MAC → session it lives behind
        self.lan: dict[bytes, None] = {}  # MACs seen as source on the TAP, oldest first
        self._last_conflict_log = 0.0

    def claim(self, session: Session, source: bytes) -> bool:
        """Give `session` its MAC, the first it sends from, if that MAC is free to take."""
        if source[0] & 1 or source in self.lan:
            return False
        owner = self.table.get(source)
        # The same identity reconnecting may take its MAC over before the old session is gone.
        if owner is not None and owner is not session and owner.identity != session.identity:
            return False
        if owner is not None and owner is not session:
            owner.mac = None
        session.mac = source
        self.table[source] = session
        return True

    def from_session(self, session: Session, frames: list[memoryview]) -> None:
        fd = self.tap.fd
        counters = session.counters
        for frame in frames:
            if len(frame) < ETH_HLEN:
                counters.dropped_invalid += 1
                continue
            source = bytes(frame[6:12])
            if source != session.mac and (
                session.mac is not None or not self.claim(session, source)
            ):
                counters.dropped_spoofed += 1
                session.log_drop(f"spoofed source MAC {_mac(source)}", b"")
                continue
            sender = sender_address(frame)
            if sender is None:
                counters.dropped_filtered += 1  # only IPv4, ARP and IPv6 cross in layer 2
                continue
            if sender != session.address_packed and not (len(sender) == 16 and link_own6(sender)):
                counters.dropped_spoofed += 1
                session.log_drop("spoofed sender address", sender)
                continue
            try:
                os.write(fd, frame)
            except OSError:
                counters.dropped_invalid += 1

    def from_device(self) -> None:
        fd = self.tap.fd
        table, lan = self.table, self.lan
        touched: set[Session] = set()
        for _ in range(TAP_BUDGET):
            try:
                frame = os.read(fd, TAP_READ)
            except BlockingIOError:
                break
            if len(frame) < ETH_HLEN:
                continue
            source = frame[6:12]
            if source not in lan and not source[0] & 1:
                self._learn_lan(source)
            destination = frame[:6]
            if not destination[0] & 1 and destination in table:
                targets = [table[destination]]
            else:  # broadcast, multicast or not yet learned: flood
                targets = [s for s in self.sessions.connected() if s.phase == "data"]
            for session in targets:
                if session.queue_packet(frame):
                    touched.add(session)
        for session in touched:
            session.flush()

    def _learn_lan(self, source: bytes) -> None:
        """A unicast source MAC seen on the TAP (new to us): the LAN side owns it from now on."""
        owner = self.table.get(source)
        if owner is not None:  # a client claimed it first: keep it, but say so
            now = time.monotonic()
            if now - self._last_conflict_log >= DROP_LOG_INTERVAL:
                self._last_conflict_log = now
                log.warn("mac_conflict", mac=_mac(source), identity=owner.identity)
            return
        if len(self.lan) >= LAN_MACS_MAX:
            del self.lan[next(iter(self.lan))]
        self.lan[source] = None

    def forget(self, session: Session) -> None:
        if session.mac is not None and self.table.get(session.mac) is session:
            del self.table[session.mac]
