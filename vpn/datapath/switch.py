"""Layer-2 mode: the gateway's TAP device is a port of a bridge on the LAN, and each session is
another port. Frames go where the destination MAC was last seen; broadcasts go everywhere.

Anti-spoofing at layer 2: a session may use one source MAC (the first it sends from), and its IPv4
and ARP frames must carry its leased address as sender. Anything else is dropped and counted.
"""

from __future__ import annotations

import os

from vpn.datapath.sessions import Session, SessionTable
from vpn.iface.tun import Tun

ETH_HLEN = 14
ETHERTYPE_IPV4 = b"\x08\x00"
ETHERTYPE_ARP = b"\x08\x06"
TAP_READ = 65536
TAP_BUDGET = 128


def sender_address(frame: bytes | memoryview) -> bytes | None:
    """The IPv4 sender of an IPv4 or ARP frame; None for other ethertypes."""
    ethertype = bytes(frame[12:14])
    if ethertype == ETHERTYPE_IPV4 and len(frame) >= ETH_HLEN + 20:
        return bytes(frame[ETH_HLEN + 12 : ETH_HLEN + 16])
    if ethertype == ETHERTYPE_ARP and len(frame) >= ETH_HLEN + 28:
        return bytes(frame[ETH_HLEN + 14 : ETH_HLEN + 18])  # ARP sender protocol address
    return None


class Switch:
    def __init__(self, tap: Tun, sessions: SessionTable) -> None:
        self.tap = tap
        self.sessions = sessions
        self.table: dict[bytes, Session] = {}  # MAC → session it lives behind

    def from_session(self, session: Session, frames: list[memoryview]) -> None:
        fd = self.tap.fd
        counters = session.counters
        for frame in frames:
            if len(frame) < ETH_HLEN:
                counters.dropped_invalid += 1
                continue
            source = bytes(frame[6:12])
            if session.mac is None and not source[0] & 1:
                session.mac = source
                self.table[source] = session
            if source != session.mac:
                counters.dropped_spoofed += 1
                session.log_drop("spoofed source MAC", b"")
                continue
            sender = sender_address(frame)
            if sender is None:
                counters.dropped_filtered += 1  # only IPv4 and ARP cross in layer-2 mode
                continue
            if sender != session.address_packed:
                counters.dropped_spoofed += 1
                session.log_drop("spoofed sender address", sender)
                continue
            try:
                os.write(fd, frame)
            except OSError:
                counters.dropped_invalid += 1

    def from_device(self) -> None:
        fd = self.tap.fd
        touched: set[Session] = set()
        for _ in range(TAP_BUDGET):
            try:
                frame = os.read(fd, TAP_READ)
            except BlockingIOError:
                break
            if len(frame) < ETH_HLEN:
                continue
            destination = frame[:6]
            if not destination[0] & 1 and destination in self.table:
                targets = [self.table[destination]]
            else:  # broadcast, multicast or not yet learned: flood
                targets = [s for s in self.sessions.connected() if s.phase == "data"]
            for session in targets:
                if session.queue_packet(frame):
                    touched.add(session)
        for session in touched:
            session.flush()

    def forget(self, session: Session) -> None:
        if session.mac is not None and self.table.get(session.mac) is session:
            del self.table[session.mac]
