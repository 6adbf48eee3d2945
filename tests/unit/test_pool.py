"""Address leases and destination routing."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vpn.errors import PoolExhausted
from vpn.pool import AddressPool, RouteTable, source_allowed

NET = ipaddress.IPv4Network("192.168.53.0/24")
REPO = Path(__file__).resolve().parents[2]


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


LEASE_IN_A_FRESH_PROCESS = """
import ipaddress, sys
from vpn.pool import AddressPool
pool = AddressPool(ipaddress.IPv4Network("192.168.53.0/24"))
print(" ".join(str(pool.lease(name)) for name in sys.argv[1:]))
"""


def test_leases_are_the_same_in_processes_with_different_hash_seeds() -> None:
    """A restarted server is a new process with a new PYTHONHASHSEED: the slot of an identity
    must not depend on it (no address requested: only the identity's hash decides)."""
    names = ["client1", "client2", "laptop-alice", "ü-name"]
    seen = set()
    for seed in ("1", "2", "12345"):
        done = subprocess.run(
            [sys.executable, "-c", LEASE_IN_A_FRESH_PROCESS, *names],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "PYTHONHASHSEED": seed},
            cwd=REPO,
            check=True,
        )
        seen.add(done.stdout.strip())
    assert len(seen) == 1, seen
    assert seen == {" ".join(str(AddressPool(NET).lease(n)) for n in names)}


def test_a_released_identity_is_remembered_not_forgotten() -> None:
    """After release, the identity gets its old address back without asking for it, and no
    other identity takes it while it is remembered and others are free."""
    pool = AddressPool(NET)
    slot = pool.lease("probe")
    wanted = ipaddress.IPv4Address("192.168.53.77")
    assert wanted != slot
    fresh = AddressPool(NET)
    assert fresh.lease("client1", wanted) == wanted  # not its hash slot
    fresh.release("client1")
    assert fresh.holder(wanted) is None and wanted not in fresh.active()
    assert fresh.lease("client2", wanted) != wanted, "remembered for client1"
    assert fresh.lease("client1") == wanted


def test_release_of_another_identity_keeps_the_holder() -> None:
    pool = AddressPool(NET)
    a = pool.lease("client1")
    pool.release("client2")  # never leased
    assert pool.holder(a) == "client1"


@pytest.mark.parametrize("prefix", [29, 28, 30])
def test_every_address_but_network_broadcast_and_server_is_leased_once(prefix: int) -> None:
    net = ipaddress.IPv4Network(f"10.0.0.0/{prefix}")
    pool = AddressPool(net)
    assert pool.capacity == net.num_addresses - 3
    leased = [pool.lease(f"c{i}") for i in range(pool.capacity)]
    assert sorted(leased) == sorted(set(net.hosts()) - {pool.server_address})
    with pytest.raises(PoolExhausted):
        pool.lease("one-too-many")


def test_pool_size_and_server_address_checks() -> None:
    with pytest.raises(ValueError, match="too small"):
        AddressPool(ipaddress.IPv4Network("10.0.0.0/31"))
    with pytest.raises(ValueError, match="not in pool"):
        AddressPool(NET, ipaddress.IPv4Address("10.0.0.1"))
    server = ipaddress.IPv4Address("192.168.53.254")
    pool = AddressPool(NET, server, reserved=[ipaddress.IPv4Address("192.168.53.1")])
    assert pool.capacity == 254 - 2
    got = {pool.lease(f"c{i}") for i in range(pool.capacity)}
    assert server not in got and ipaddress.IPv4Address("192.168.53.1") not in got
