"""Address leases and destination routing."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vpn.errors import PoolExhausted
from vpn.pool import AddressPool, RouteTable, source_allowed

NET = ipaddress.IPv4Network("192.168.53.0/24")


def test_server_takes_the_first_address_and_clients_get_others() -> None:
    pool = AddressPool(NET)
    assert pool.server_address == ipaddress.IPv4Address("192.168.53.1")
    a, b = pool.lease("client1"), pool.lease("client2")
    assert a != b
    assert {a, b} <= set(NET.hosts()) - {pool.server_address}


def test_same_identity_same_address_across_reconnects() -> None:
    pool = AddressPool(NET)
    first = pool.lease("client1")
    pool.release("client1")
    pool.lease("client2")
    assert pool.lease("client1") == first


def test_same_identity_same_address_after_a_server_restart() -> None:
    """A fresh pool (restarted server) gives the hash slot again, whatever the order."""
    one = AddressPool(NET)
    a1, b1 = one.lease("client1"), one.lease("client2")
    two = AddressPool(NET)
    b2, a2 = two.lease("client2"), two.lease("client1")
    assert (a1, b1) == (a2, b2)


def test_requested_address_is_granted_when_free() -> None:
    pool = AddressPool(NET)
    wanted = ipaddress.IPv4Address("192.168.53.77")
    assert pool.lease("client1", wanted) == wanted
    assert pool.lease("client2", wanted) != wanted  # held by client1


@pytest.mark.parametrize("wanted", ["192.168.53.1", "192.168.53.0", "192.168.53.255", "10.0.0.1"])
def test_requests_for_reserved_or_foreign_addresses_are_ignored(wanted: str) -> None:
    pool = AddressPool(NET)
    got = pool.lease("client1", ipaddress.IPv4Address(wanted))
    assert got != ipaddress.IPv4Address(wanted)
    assert got in NET


def test_exhaustion_then_reuse_of_idle_addresses() -> None:
    pool = AddressPool(ipaddress.IPv4Network("10.0.0.0/29"))  # 6 hosts, 1 for the server
    leased = {pool.lease(f"c{i}") for i in range(5)}
    assert len(leased) == 5
    with pytest.raises(PoolExhausted, match="exhausted"):
        pool.lease("c5")
    pool.release("c0")
    assert pool.lease("c5") in leased  # c0's idle address goes to a newcomer


@given(st.lists(st.text(min_size=1, max_size=8), unique=True, max_size=60))
def test_active_leases_are_unique(names: list[str]) -> None:
    pool = AddressPool(NET)
    addresses = [pool.lease(n) for n in names]
    assert len(set(addresses)) == len(addresses)
    assert pool.server_address not in addresses


def test_route_table_hosts_then_longest_prefix() -> None:
    table: RouteTable[str] = RouteTable()
    table.add_host(ipaddress.IPv4Address("192.168.53.2"), "client1")
    table.add_subnet(ipaddress.IPv4Network("192.168.50.0/24"), "router")
    table.add_subnet(ipaddress.IPv4Network("192.168.50.128/25"), "other")
    assert table.lookup(ipaddress.IPv4Address("192.168.53.2").packed) == "client1"
    assert table.lookup(ipaddress.IPv4Address("192.168.50.5").packed) == "router"
    assert table.lookup(ipaddress.IPv4Address("192.168.50.200").packed) == "other"
    assert table.lookup(ipaddress.IPv4Address("192.168.60.5").packed) is None
    table.remove_target("router")
    assert table.lookup(ipaddress.IPv4Address("192.168.50.5").packed) is None


def test_anti_spoofing() -> None:
    own = ipaddress.IPv4Address("192.168.53.2").packed
    site = ipaddress.IPv4Network("192.168.50.0/24")
    masks = ((int(site.network_address), int(site.netmask)),)
    assert source_allowed(own, own, ())
    assert not source_allowed(ipaddress.IPv4Address("192.168.53.3").packed, own, ())
    assert source_allowed(ipaddress.IPv4Address("192.168.50.9").packed, own, masks)
    assert not source_allowed(ipaddress.IPv4Address("192.168.51.9").packed, own, masks)
