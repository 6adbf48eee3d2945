"""Layer-2 mode: the gateway bridges a TAP port with its LAN interface; the client gets an address
on the LAN itself and finds hosts by ARP, through the tunnel."""

from __future__ import annotations

import ipaddress

from scenarios.lab_checks import wait_until
from scenarios.runner import Context, Scenario
from scenarios.tunnel import Tunnel

BRIDGE = "br0"


def _mac(ctx: Context, node: str, ifname: str) -> str:
    return ctx.backend.ensure(node, ["cat", f"/sys/class/net/{ifname}/address"]).strip()


def run(ctx: Context) -> None:
    backend = ctx.backend
    tunnel = Tunnel(backend)
    gateway = tunnel.gateway.name
    lan = backend.topology.network("lan")
    pool = tunnel.gateway.labels["vpnlab.vpn.tap-pool"]
    host = tunnel.hosts[0]
    host_address = str(backend.topology.node(host).address("lan"))
    client = tunnel.clients[0]

    with ctx.step("gateway bridges its LAN interface") as step:
        nic = backend.interface(gateway, "lan")
        address = f"{tunnel.gateway.address('lan')}/{lan.subnet.prefixlen}"
        for argv in (
            ["ip", "link", "add", BRIDGE, "type", "bridge"],
            ["ip", "addr", "del", address, "dev", nic],
            ["ip", "link", "set", nic, "master", BRIDGE],
            ["ip", "addr", "add", address, "dev", BRIDGE],
            ["ip", "link", "set", BRIDGE, "up"],
        ):
            backend.ensure(gateway, argv)
        ok, summary = tunnel.ping(gateway, host_address)
        assert ok, f"the gateway lost the LAN after bridging: {summary}"
        step.detail = f"{nic} and the gateway's address {address} now on {BRIDGE}"

    try:
        with ctx.step("server in layer-2 mode, TAP port on the bridge") as step:
            tunnel.start_server("--tap", "--bridge", BRIDGE, "--pool", pool,
                                "--tap-network", str(lan.subnet))  # fmt: skip
            ports = backend.ensure(gateway, ["ip", "-o", "link", "show", "master", BRIDGE])
            assert "tap" in ports or "tun0" in ports, ports
            step.detail = f"pool {pool} inside {lan.subnet}"
        with ctx.step("client joins the LAN with a TAP device") as step:
            tunnel.start_client(client)
            status = tunnel.wait_connected(client)
            vpn_address = ipaddress.IPv4Interface(status["address"])
            assert vpn_address.network == lan.subnet, status["address"]
            details = backend.ensure(client, ["ip", "-d", "link", "show", status["tun"]])
            assert "tun type tap" in details, details
            step.detail = f"{client} got {vpn_address} on {status['tun']} (a TAP device)"
        with ctx.step("client reaches a LAN host by ARP through the tunnel") as step:
            backend.exec(client, ["ip", "neigh", "flush", "dev", status["tun"]])
            ok, summary = tunnel.ping(client, host_address, count=3)
            assert ok, summary
            neighbour = backend.ensure(client, ["ip", "neigh", "show", host_address])
            host_mac = _mac(ctx, host, backend.interface(host, "lan"))
            assert host_mac in neighbour, f"ARP entry {neighbour!r}, {host}'s MAC is {host_mac}"
            step.detail = f"{host_address} is at {host_mac} (learned by ARP): {summary}"
        with ctx.step("the LAN host sees the client as a neighbour") as step:
            client_mac = _mac(ctx, client, status["tun"])
            ok, summary = tunnel.ping(host, str(vpn_address.ip), count=2)
            assert ok, summary
            neighbour = backend.ensure(host, ["ip", "neigh", "show", str(vpn_address.ip)])
            assert client_mac in neighbour, f"{host}'s ARP entry {neighbour!r}, client {client_mac}"
            step.detail = f"{host} → {vpn_address.ip} at {client_mac}"
        with ctx.step(
            "IPv6 crosses as it is: the client pings a LAN host's link-local address"
        ) as step:
            nic = backend.interface(host, "lan")
            shown = backend.ensure(
                host, ["ip", "-6", "-o", "addr", "show", "dev", nic, "scope", "link"]
            )
            words = shown.split()
            assert "inet6" in words, f"{host} has no link-local IPv6 address on {nic}: {shown!r}"
            link_local = words[words.index("inet6") + 1].split("/")[0]
            # The client's own link-local address first passes duplicate address detection.
            own = ["ip", "-6", "-o", "addr", "show", "dev", status["tun"], "scope", "link"]
            wait_until(
                f"a usable link-local address on {client}'s {status['tun']}",
                lambda: backend.ensure(client, [*own, "-tentative"]).strip(),
            )
            ok, summary = tunnel.ping(client, f"{link_local}%{status['tun']}", count=3)
            assert ok, f"{client} → {link_local} over {status['tun']}: {summary}"
            neighbour = backend.ensure(client, ["ip", "-6", "neigh", "show", link_local])
            assert host_mac in neighbour, f"ND entry {neighbour!r}, {host}'s MAC is {host_mac}"
            step.detail = f"{link_local} is at {host_mac} (neighbour discovery): {summary}"
        ctx.metric("client_address", str(vpn_address))
    finally:
        tunnel.stop_all()


SCENARIO = Scenario(
    name="tap",
    description="layer 2: the client joins the LAN through a TAP bridged on the gateway, by ARP",
    run=run,
)
