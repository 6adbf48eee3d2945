"""IPv6 leases and routes (pure): the --pool6 pool, the route table's IPv6 entries, and the
anti-spoofing check on 16-byte sources."""

from __future__ import annotations

import ipaddress

import pytest

from vpn.errors import PoolExhausted
from vpn.pool import AddressPool, RouteTable, source_allowed

POOL6 = ipaddress.IPv6Network("fd00:53::/64")


def pool6() -> AddressPool[ipaddress.IPv6Address]:
    return AddressPool(POOL6)


def test_server_takes_the_first_address_and_leases_are_ipv6() -> None:
    pool = pool6()
    assert pool.server_address == ipaddress.IPv6Address("fd00:53::1")
    address = pool.lease("client1")
    assert isinstance(address, ipaddress.IPv6Address) and address in POOL6
    assert address != pool.server_address


def test_the_same_identity_gets_the_same_ipv6_address_from_a_new_pool() -> None:
    """A server restart is a new pool: the hash slot gives the identity its address back."""
    first = {name: pool6().lease(name) for name in ("client1", "client2", "alice")}
    again = pool6()
    for name in ("alice", "client2", "client1"):  # other order: same addresses
        assert again.lease(name) == first[name]
    assert len(set(first.values())) == 3


def test_ipv4_and_ipv6_pools_hash_the_same_way() -> None:
    """One leasing rule for both families: the slot is the same sha256 slot modulo the size."""
    v4: AddressPool[ipaddress.IPv4Address] = AddressPool(ipaddress.IPv4Network("10.0.0.0/24"))
    assert int(v4.lease("client1")) - int(v4.network.network_address) == v4._slot("client1") + 1
    v6 = pool6()
    assert int(v6.lease("client1")) - int(POOL6.network_address) == v6._slot("client1") + 1


def test_ipv6_lease_released_is_kept_for_its_identity_then_reused() -> None:
    pool: AddressPool[ipaddress.IPv6Address] = AddressPool(ipaddress.IPv6Network("fd00::/126"))
    a = pool.lease("a")  # /126: network, server, one client, "broadcast"
    assert pool.holder(a) == "a"
    with pytest.raises(PoolExhausted):
        pool.lease("b")
    pool.release("a")
    assert pool.holder(a) is None
    assert pool.lease("a") == a, "remembered for its identity"
    pool.release("a")
    assert pool.lease("b") == a, "reused once the pool has nothing else"


def test_requested_ipv6_address_is_granted_when_free() -> None:
    pool = pool6()
    wanted = ipaddress.IPv6Address("fd00:53::77")
    assert pool.lease("client1", wanted) == wanted
    assert pool.lease("client2", wanted) != wanted, "held: not given to another identity"


def test_route_table_keeps_the_families_apart() -> None:
    routes: RouteTable[str] = RouteTable()
    routes.add_subnet(ipaddress.IPv6Network("::/0"), "v6-default")
    routes.add_subnet(ipaddress.IPv6Network("fd00:250::/64"), "site")
    routes.add_host(ipaddress.IPv6Address("fd00:53::7"), "client")
    routes.add_subnet(ipaddress.IPv4Network("10.210.0.0/24"), "site4")
    assert routes.owner(ipaddress.IPv6Address("fd00:250::9").packed) == "site"
    assert routes.owner(ipaddress.IPv6Address("fd00:53::7").packed) == "client"
    assert routes.owner(ipaddress.IPv6Address("2001:db8::1").packed) == "v6-default"
    # An IPv4 destination never matches an IPv6 subnet, not even ::/0.
    assert routes.owner(ipaddress.IPv4Address("10.9.9.9").packed) is None
    assert routes.owner(ipaddress.IPv4Address("10.210.0.5").packed) == "site4"
    assert routes.subnet_owner(ipaddress.IPv6Network("fd00:250::/64")) == "site"
    assert len(routes) == 4
    routes.remove_target("site")
    assert routes.owner(ipaddress.IPv6Address("fd00:250::9").packed) == "v6-default"
    routes.remove_subnet(ipaddress.IPv6Network("::/0"))
    assert routes.owner(ipaddress.IPv6Address("2001:db8::1").packed) is None


def test_source_allowed_for_ipv6() -> None:
    own = ipaddress.IPv6Address("fd00:53::7").packed
    site = ipaddress.IPv6Network("fd00:250::/64")
    masks = ((int(site.network_address), int(site.netmask)),)
    assert source_allowed(own, own, masks)
    assert source_allowed(ipaddress.IPv6Address("fd00:250::1").packed, own, masks)
    assert not source_allowed(ipaddress.IPv6Address("fd00:53::8").packed, own, masks)
    assert not source_allowed(ipaddress.IPv6Address("fd00:251::1").packed, own, masks)
    assert not source_allowed(ipaddress.IPv6Address("fd00:250::1").packed, own, ())
