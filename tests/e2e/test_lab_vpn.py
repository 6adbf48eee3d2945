"""The lab with the VPN running, inspected node by node with testinfra — the same test
functions against Docker containers (docker://) and namespaces (ip netns exec)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from lab.backends.base import Backend
from lab.run import running_lab
from scenarios.tunnel import TUN, Tunnel
from tests.e2e.conftest import BACKENDS, backend_skip_reason


@dataclass
class VpnLab:
    backend: Backend
    tunnel: Tunnel
    client: str
    client_address: str  # the client's VPN address
    host_address: str  # host1 on the LAN


@pytest.fixture(scope="module", params=BACKENDS)
def vpnlab(request: pytest.FixtureRequest) -> Iterator[VpnLab]:
    reason = backend_skip_reason(request.param)
    if reason:
        pytest.skip(reason)
    with running_lab(request.param) as backend:
        tunnel = Tunnel(backend)
        try:
            tunnel.start_server()
            client = tunnel.clients[0]
            tunnel.start_client(client)
            status = tunnel.wait_connected(client)
            host = backend.topology.node(tunnel.hosts[0])
            yield VpnLab(
                backend, tunnel, client, status["address"].split("/")[0], str(host.address("lan"))
            )
        finally:
            tunnel.stop_all()


def test_client_tun_has_its_vpn_address(vpnlab: VpnLab) -> None:
    host = vpnlab.backend.host(vpnlab.client)
    tun = host.interface(TUN)
    assert tun.exists
    assert vpnlab.client_address in tun.addresses


def test_route_to_the_lan_leaves_through_the_tun(vpnlab: VpnLab) -> None:
    host = vpnlab.backend.host(vpnlab.client)
    route = host.check_output(f"ip route get {vpnlab.host_address}")
    assert f"dev {TUN}" in route
    lan = vpnlab.tunnel.routes[0]
    assert lan in [r.get("dst") for r in host.interface(TUN).routes()]  # listed for this dev


def test_gateway_forwards_and_listens(vpnlab: VpnLab) -> None:
    gateway = vpnlab.backend.host(vpnlab.tunnel.gateway.name)
    assert gateway.sysctl("net.ipv4.ip_forward") == 1
    assert gateway.socket(f"tcp://0.0.0.0:{vpnlab.tunnel.port}").is_listening
    assert (
        vpnlab.tunnel.server_address
        in gateway.interface(
            vpnlab.backend.interface(vpnlab.tunnel.gateway.name, vpnlab.tunnel.network)
        ).addresses
    )


def test_lan_hosts_route_the_pool_back_through_the_gateway(vpnlab: VpnLab) -> None:
    gateway_lan = str(vpnlab.tunnel.gateway.address("lan"))
    for name in vpnlab.tunnel.hosts:
        out = vpnlab.backend.host(name).check_output(f"ip route get {vpnlab.client_address}")
        assert f"via {gateway_lan}" in out, f"{name}: {out}"


def test_pings_are_delivered_both_ways(vpnlab: VpnLab) -> None:
    client = vpnlab.backend.host(vpnlab.client)
    assert client.run(f"ping -n -c 2 -i 0.2 -W 2 {vpnlab.host_address}").rc == 0
    lan_host = vpnlab.backend.host(vpnlab.tunnel.hosts[0])
    assert lan_host.run(f"ping -n -c 2 -i 0.2 -W 2 {vpnlab.client_address}").rc == 0


def test_server_counts_the_client(vpnlab: VpnLab) -> None:
    status = vpnlab.tunnel.status(vpnlab.tunnel.gateway.name)
    assert status is not None
    rows = [c for c in status["clients"] if c["identity"] == vpnlab.client]
    assert rows and rows[0]["address"] == vpnlab.client_address
    assert rows[0]["rx_packets"] > 0 and rows[0]["dropped_spoofed"] == 0


def test_backend_sets_a_nodes_sysctl_in_its_own_namespace_only(vpnlab: VpnLab) -> None:
    key = "net.ipv4.icmp_echo_ignore_all"
    host, other = vpnlab.tunnel.hosts[0], vpnlab.tunnel.hosts[1]
    vpnlab.backend.set_sysctl(host, key, "1")
    try:
        assert vpnlab.backend.host(host).sysctl(key) == 1
        assert vpnlab.backend.host(other).sysctl(key) == 0
        lan_host = vpnlab.backend.host(vpnlab.tunnel.hosts[1])
        assert lan_host.run(f"ping -n -c 1 -W 1 {vpnlab.host_address}").rc != 0
    finally:
        vpnlab.backend.set_sysctl(host, key, "0")
