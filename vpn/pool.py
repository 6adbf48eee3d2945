"""Address leases and the routing of tunnel destinations to sessions; pure, no I/O.

A client keeps its address across reconnects — even across a server restart — because the
address it asks for (the one it had) is granted when free, and otherwise a slot derived from a
hash of its identity is tried first. That is what lets TCP sessions inside the tunnel survive.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable
from typing import Generic, TypeVar, cast

from vpn.errors import PoolExhausted

T = TypeVar("T")
# An IPv4 pool leases IPv4Address, an IPv6 pool (--pool6) IPv6Address: the same class for both.
A = TypeVar("A", ipaddress.IPv4Address, ipaddress.IPv6Address)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MEMO_MAX = 4096  # destinations whose owner RouteTable.owner remembers
PROBE_MAX = 1 << 16  # slots tried after the hash slot (an IPv6 /64 has 2**64 of them)


class AddressPool(Generic[A]):
    def __init__(
        self,
        network: Network,
        server_address: A | None = None,
        reserved: Iterable[A] = (),
    ) -> None:
        if network.num_addresses < 4:
            raise ValueError(
                f"pool {network} is too small: it needs room for the server and a client"
            )
        self.network = network
        self._make: type[A] = cast("type[A]", type(network.network_address))
        self.server_address: A = server_address or cast(A, next(network.hosts()))
        if self.server_address not in network:
            raise ValueError(f"server address {self.server_address} is not in pool {network}")
        self._reserved = {self.server_address, *reserved}
        self._first = int(network.network_address) + 1
        self._size = network.num_addresses - 2  # without network and broadcast addresses
        self._by_identity: dict[str, A] = {}
        self._active: dict[A, str] = {}

    @property
    def capacity(self) -> int:
        return self._size - len(self._reserved)

    def _free(self, address: A, identity: str) -> bool:
        if address not in self.network or address in self._reserved:
            return False
        if address in (self.network.network_address, self.network.broadcast_address):
            return False
        holder = self._active.get(address)
        if holder is not None:
            return holder == identity
        remembered = [i for i, a in self._by_identity.items() if a == address and i != identity]
        return not remembered

    def _slot(self, identity: str) -> int:
        digest = hashlib.sha256(identity.encode()).digest()
        return int.from_bytes(digest[:8], "big") % self._size

    def lease(self, identity: str, requested: A | None = None) -> A:
        """An address for identity: the one it holds, the one it asks for, or its hash slot."""
        for candidate in (self._by_identity.get(identity), requested):
            if candidate is not None and self._free(candidate, identity):
                return self._grant(identity, candidate)
        start = self._slot(identity)
        for step in range(min(self._size, PROBE_MAX)):
            candidate = self._make(self._first + (start + step) % self._size)
            if self._free(candidate, identity):
                return self._grant(identity, candidate)
        # Every slot is active or remembered: forget the oldest remembered idle identity.
        for old_identity, address in list(self._by_identity.items()):
            if address not in self._active:
                del self._by_identity[old_identity]
                return self._grant(identity, address)
        raise PoolExhausted(f"address pool {self.network} is exhausted ({self.capacity} in use)")

    def _grant(self, identity: str, address: A) -> A:
        holder = self._active.get(address)
        if holder not in (None, identity):
            raise PoolExhausted(f"{address} is held by {holder}")
        self._by_identity.pop(identity, None)
        self._by_identity[identity] = address  # re-insert: most recent last
        self._active[address] = identity
        return address

    def release(self, identity: str) -> None:
        """The session ended; the address stays remembered for the identity's return."""
        address = self._by_identity.get(identity)
        if address is not None and self._active.get(address) == identity:
            del self._active[address]

    def holder(self, address: A) -> str | None:
        return self._active.get(address)

    def active(self) -> dict[A, str]:
        return dict(self._active)


class RouteTable(Generic[T]):
    """Destination address → session: exact host entries first, then subnets, longest first.

    Keys are packed addresses (4 bytes for IPv4, 16 for IPv6) so the hot loop can look up
    `packet[16:20]` or an IPv6 header's `packet[24:40]` directly; the subnets of each family are
    kept apart, so an IPv4 destination never matches an IPv6 subnet. `owner` memoizes the
    subnet walk per destination, so a router that asks for every packet pays one dict lookup,
    not a scan of the subnets; any change to the table clears the memo.
    """

    def __init__(self) -> None:
        self.hosts: dict[bytes, T] = {}
        # address length → [(prefixlen, network int, mask, target)], longest prefix first
        self._subnets: dict[int, list[tuple[int, int, int, T]]] = {4: [], 16: []}
        self._memo: dict[bytes, T | None] = {}

    @property
    def has_subnets(self) -> bool:
        return any(self._subnets.values())

    def owner(self, packed: bytes) -> T | None:
        """`lookup`, memoized; the memo is bounded, so forged destinations cannot grow it."""
        try:
            return self._memo[packed]
        except KeyError:
            pass
        if len(self._memo) >= MEMO_MAX:
            self._memo.clear()
        target = self._memo[packed] = self.lookup(packed)
        return target

    def add_host(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address, target: T) -> None:
        self._memo.clear()
        self.hosts[address.packed] = target

    def add_subnet(self, network: Network, target: T) -> None:
        self.remove_subnet(network)
        entry = (network.prefixlen, int(network.network_address), int(network.netmask), target)
        family = self._subnets[len(network.network_address.packed)]
        family.append(entry)
        family.sort(key=lambda e: -e[0])

    def remove_subnet(self, network: Network) -> None:
        key = (network.prefixlen, int(network.network_address))
        self._memo.clear()
        width = len(network.network_address.packed)
        self._subnets[width] = [e for e in self._subnets[width] if (e[0], e[1]) != key]

    def remove_target(self, target: T) -> None:
        self._memo.clear()
        self.hosts = {k: v for k, v in self.hosts.items() if v is not target}
        for width, entries in self._subnets.items():
            self._subnets[width] = [e for e in entries if e[3] is not target]

    def lookup(self, packed: bytes) -> T | None:
        target = self.hosts.get(packed)
        if target is not None:
            return target
        subnets = self._subnets.get(len(packed))
        if not subnets:
            return None
        value = int.from_bytes(packed, "big")
        for _prefixlen, network, mask, candidate in subnets:
            if value & mask == network:
                return candidate
        return None

    def subnet_owner(self, network: Network) -> T | None:
        for prefixlen, net, _mask, target in self._subnets[len(network.network_address.packed)]:
            if prefixlen == network.prefixlen and net == int(network.network_address):
                return target
        return None

    def __len__(self) -> int:
        return len(self.hosts) + sum(map(len, self._subnets.values()))


def source_allowed(packed: bytes, address: bytes, subnets: tuple[tuple[int, int], ...]) -> bool:
    """Anti-spoofing: the inner source is the session's own address or in one of its subnets."""
    if packed == address:
        return True
    if not subnets:
        return False
    value = int.from_bytes(packed, "big")
    return any(value & mask == network for network, mask in subnets)
