"""Layer-3 mode: IPv4 and IPv6 packets between the sessions and the gateway's TUN, by address.

From a session, every packet's source must be the session's address or one of its subnets —
its IPv4 address and IPv4 subnets for an IPv4 packet, its IPv6 address (--pool6) and IPv6
subnets for an IPv6 one (anti-spoofing; a session without any IPv6 has its IPv6 packets
dropped as invalid, as before there was IPv6); it goes to another session when the
destination is one (with --client-to-client; without it, packets to another client's address
or subnet are dropped and counted as `dropped_filtered`), else into the TUN. With offloads, a
client's virtio_net_hdr is checked before the kernel sees it (`dropped_bad_vnet`). From the
TUN, each packet goes to the session that owns its destination. Both loops handle a batch per
wake-up and flush each session they touched once.
"""

from __future__ import annotations

import os
import struct

from vpn import log
from vpn.datapath.counters import Counters
from vpn.datapath.sessions import Session, SessionTable
from vpn.iface.tun import Tun
from vpn.iface.tun_writes import explain_write_error
from vpn.iface.vnet import VNET_IPV4, VnetHdr, client_vnet_problem
from vpn.pool import source_allowed

TUN_READ = 65536 + 64
TUN_BUDGET = 128  # packets per wake-up
TUN_BATCH_BYTES = 1 << 19  # flush sessions after this much, to bound latency
# IPv4 header fields the hot loops need, read in one call: version/IHL, source, destination.
_IPV4_ADDRESSES = struct.Struct("!B11x4s4s")
_IPV4_DESTINATION = struct.Struct("!B15x4s")
# The same of an IPv6 header: version, next header, source, destination; and the destination.
_IPV6_ADDRESSES = struct.Struct("!B5xB1x16s16s")
_IPV6_DESTINATION = struct.Struct("!24x16s")
IPV6_HEADER = 40


class Router:
    def __init__(
        self,
        tun: Tun,
        offset: int,
        table: SessionTable,
        counters: Counters,
        *,
        client_to_client: bool,
    ) -> None:
        self.tun = tun
        self.offset = offset  # bytes of virtio_net_hdr before each packet
        self.table = table
        self.counters = counters  # the gateway's: packets no session owns
        self.client_to_client = client_to_client

    def from_session(self, session: Session, packets: list[memoryview]) -> None:
        fd, off, own, masks = (
            self.tun.fd,
            session.offset,
            session.address_packed,
            session.subnet_masks,
        )
        own6, masks6 = session.address6_packed, session.subnet6_masks
        ipv6 = bool(own6 or masks6)  # else IPv6 packets are invalid, as they were before IPv6
        routes = self.table.routes
        peers = routes.hosts
        # Another client's subnet is as much "client to client" as its address: with subnets
        # in the table, a destination that is no client host is looked up (memoized) too.
        owner = routes.owner if routes.has_subnets else None
        write = os.write
        addresses = _IPV4_ADDRESSES.unpack_from
        addresses6 = _IPV6_ADDRESSES.unpack_from
        with_vnet = VNET_IPV4.unpack_from
        counters = session.counters
        touched: list[Session] = []
        written = 0
        for packet in packets:
            # Every packet's IP header, also a GSO super-packet's (after the virtio header).
            size = len(packet) - off
            if size < 20:
                counters.dropped_invalid += 1
                continue
            if off:
                flags, gso, hdr_len, gso_size, cstart, coff, first, proto, source, destination = (
                    with_vnet(packet)
                )
                if first >> 4 == 6:
                    if not ipv6 or size < IPV6_HEADER:
                        counters.dropped_invalid += 1
                        continue
                    first, proto, source, destination = addresses6(packet, off)
                # The kernel acts on the header only with flags, a GSO type or a size set.
                if flags or gso or gso_size or hdr_len > size:
                    hdr = VnetHdr(flags, gso, hdr_len, gso_size, cstart, coff)
                    problem = client_vnet_problem(hdr, first, proto, size)
                    if problem is not None:
                        counters.dropped_bad_vnet += 1
                        session.log_drop(problem, b"")
                        continue
            else:
                first, source, destination = addresses(packet)
                if first >> 4 == 6:
                    if not ipv6 or size < IPV6_HEADER:
                        counters.dropped_invalid += 1
                        continue
                    first, _, source, destination = addresses6(packet)
            version = first >> 4
            if version == 4:
                mine, my_masks = own, masks
            elif version == 6:
                mine, my_masks = own6, masks6
            else:
                counters.dropped_invalid += 1
                continue
            if source != mine and not source_allowed(source, mine, my_masks):
                counters.dropped_spoofed += 1
                session.log_drop("spoofed source", source)
                continue
            peer = peers.get(destination)
            if peer is None and owner is not None:
                peer = owner(destination)
            if peer is not None and peer is not session:
                if not self.client_to_client:
                    counters.dropped_filtered += 1
                    session.log_drop("client-to-client is off (--client-to-client)", b"")
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
                session.log_drop(explain_write_error(exc, packet, tun=self.tun), b"")
        for peer in touched:
            peer.dirty = False
            peer.flush()
        if written:
            # A TUN write runs the kernel's forwarding at once: replies and TCP ACKs from the
            # LAN may already wait in the TUN. Read them when this read wake-up ends.
            session.after_read = self.from_device

    def from_device(self) -> None:
        fd, off = self.tun.fd, self.offset
        sessions = self.table.by_identity
        routes = self.table.routes
        hosts, lookup = routes.hosts, routes.lookup
        read, readv = os.read, os.readv
        destination_of = _IPV4_DESTINATION.unpack_from
        destination6_of = _IPV6_DESTINATION.unpack_from
        touched: list[Session] = []
        taken = 0
        unroutable = 0
        # Packets are read straight into the send buffer of the session most likely to own
        # them (the only one, or the previous packet's): no copy when the guess is right.
        target: Session | None = None
        if len(sessions) == 1:
            (target,) = sessions.values()
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
                if first >> 4 != 6 or length < off + IPV6_HEADER:
                    unroutable += 1
                    continue
                (destination,) = destination6_of(packet, off)
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

    def forget(self, session: Session) -> None:
        """Nothing to forget: the session table drops its routes."""
