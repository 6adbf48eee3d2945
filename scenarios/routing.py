"""Why a ping through the tunnel fails, hop by hop: first forwarding off on the gateway, then a
LAN host without its route back to the VPN pool. Each break is diagnosed from what each hop saw
— the server's session counters, the gateway's kernel counters, a capture on the LAN, the
host's own counters and routes — and then repaired."""

from __future__ import annotations

from dataclasses import dataclass

from scenarios.lab_checks import icmp_echoes, lan_address, read_sysctl, set_sysctl, snmp
from scenarios.runner import Context, Result, Scenario
from scenarios.tunnel import Tunnel

COUNT = 3
FORWARDING = "net.ipv4.ip_forward"


@dataclass
class Probe:
    """One ping through the tunnel and what each hop counted meanwhile."""

    ok: bool
    summary: str
    server_rx: int  # packets the gateway received from the client's session
    server_tx: int  # packets the gateway sent back into it
    gateway_ip: dict[str, int]  # the gateway's Ip counters, increase
    host_icmp: dict[str, int]  # the LAN host's Icmp counters, increase
    requests: int  # echo requests to the host seen on the LAN
    replies_to_gateway: int  # echo replies from the host addressed to the gateway's MAC
    other_replies: int


class Hops:
    def __init__(self, tunnel: Tunnel, client: str, host: str) -> None:
        self.tunnel, self.backend = tunnel, tunnel.backend
        self.client, self.host = client, host
        gateway = tunnel.gateway
        self.lan, self.address = lan_address(tunnel, host)
        self.gateway_lan = str(gateway.address(self.lan))
        device = self.backend.interface(gateway.name, self.lan)
        self.gateway_mac = self.backend.ensure(
            gateway.name, ["cat", f"/sys/class/net/{device}/address"]
        ).strip()
        self.runs = 0

    def _counters(self) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
        server = self.tunnel.status(self.tunnel.gateway.name) or {"clients": []}
        row = next(c for c in server["clients"] if c["identity"] == self.client)
        return (
            row,
            snmp(self.backend, self.tunnel.gateway.name, "Ip"),
            snmp(self.backend, self.host, "Icmp"),
        )

    def probe(self, vpn_address: str) -> Probe:
        before = self._counters()
        self.runs += 1
        name = f"routing-{self.backend.name}-{self.runs}"
        with self.backend.capture(self.lan, name, "icmp") as capture:
            ok, summary = self.tunnel.ping(self.client, self.address, count=COUNT, timeout=1)
        after = self._counters()
        echoes = icmp_echoes(capture.path)
        replies = [e for e in echoes if e.reply and e.source == self.address]
        return Probe(
            ok=ok,
            summary=summary,
            server_rx=after[0]["rx_packets"] - before[0]["rx_packets"],
            server_tx=after[0]["tx_packets"] - before[0]["tx_packets"],
            gateway_ip={k: v - before[1][k] for k, v in after[1].items()},
            host_icmp={k: v - before[2][k] for k, v in after[2].items()},
            requests=sum(
                1
                for e in echoes
                if not e.reply and e.source == vpn_address and e.destination == self.address
            ),
            replies_to_gateway=sum(1 for e in replies if e.eth_destination == self.gateway_mac),
            other_replies=sum(1 for e in replies if e.eth_destination != self.gateway_mac),
        )


def run(ctx: Context) -> None:
    backend = ctx.backend
    tunnel = Tunnel(backend)
    client, host = tunnel.clients[0], tunnel.hosts[0]
    gateway = tunnel.gateway.name
    try:
        with ctx.step(f"tunnel up, {client} reaches {host}") as step:
            tunnel.start_server()
            tunnel.start_client(client)
            vpn_address = tunnel.wait_connected(client)["address"].split("/")[0]
            hops = Hops(tunnel, client, host)
            baseline = hops.probe(vpn_address)
            assert baseline.ok, baseline.summary
            assert baseline.requests >= COUNT and baseline.replies_to_gateway >= COUNT, baseline
            step.detail = f"{client} ({vpn_address}) → {host} ({hops.address}): {baseline.summary}"

        with ctx.step(
            f"{FORWARDING}=0 on the gateway, after the server started: ping fails"
        ) as step:
            how = set_sysctl(backend, gateway, FORWARDING, "0")
            broken = hops.probe(vpn_address)
            assert not broken.ok, f"still answered: {broken.summary}"
            step.detail = f"set by {how}: {broken.summary}"
        with ctx.step(
            "diagnosis: the gateway took the packets from the tunnel, dropped them"
        ) as step:
            dropped = broken.gateway_ip["InAddrErrors"]
            assert broken.server_rx >= COUNT, f"the gateway's session got {broken.server_rx}"
            assert dropped >= COUNT, f"gateway Ip InAddrErrors +{dropped}: {broken.gateway_ip}"
            assert broken.requests == 0, f"{broken.requests} requests reached the LAN anyway"
            assert broken.host_icmp["InEchos"] == 0, broken.host_icmp
            setting = read_sysctl(backend, gateway, FORWARDING)
            assert setting == "0", f"{FORWARDING} = {setting}"
            step.detail = (
                f"hop 1 ok: server session rx +{broken.server_rx} packets from {client}; hop 2 "
                f"fails: gateway Ip InAddrErrors +{dropped} (not addressed to it, and "
                f"{FORWARDING} = {setting}); LAN capture: 0 echo requests to {host}; {host} Icmp "
                "InEchos +0"
            )
        with ctx.step(f"{FORWARDING}=1 again: ping works") as step:
            set_sysctl(backend, gateway, FORWARDING, "1")
            fixed = hops.probe(vpn_address)
            assert fixed.ok, fixed.summary
            step.detail = fixed.summary

        with ctx.step(f"{host}'s route back to the pool {tunnel.pool} removed: ping fails") as step:
            backend.ensure(host, ["ip", "route", "del", tunnel.pool])
            lost = hops.probe(vpn_address)
            assert not lost.ok, f"still answered: {lost.summary}"
            step.detail = f"ip route del {tunnel.pool} on {host}: {lost.summary}"
        with ctx.step(
            f"diagnosis: {host} gets the requests, its replies never reach the gateway"
        ) as step:
            route = backend.exec(host, ["ip", "route", "get", vpn_address])
            where = (route.stdout or route.stderr).strip().splitlines()[0]
            assert lost.requests >= COUNT, f"only {lost.requests} requests on the LAN"
            assert lost.host_icmp["InEchos"] >= COUNT, lost.host_icmp
            assert lost.replies_to_gateway == 0, f"{lost.replies_to_gateway} replies to the gateway"
            assert lost.server_tx == 0, f"server session tx +{lost.server_tx}"
            assert hops.gateway_lan not in where, f"{host} still routes via the gateway: {where}"
            step.detail = (
                f"LAN capture: {lost.requests} echo requests to {host}, {lost.replies_to_gateway} "
                f"replies to the gateway's MAC ({lost.other_replies} elsewhere); {host} Icmp "
                f"InEchos +{lost.host_icmp['InEchos']}; server session tx +0; on {host} `ip route "
                f"get {vpn_address}`: {where}"
            )
        with ctx.step(
            f"route {tunnel.pool} via {hops.gateway_lan} back on {host}: ping works"
        ) as step:
            backend.ensure(host, ["ip", "route", "replace", tunnel.pool, "via", hops.gateway_lan])
            fixed = hops.probe(vpn_address)
            assert fixed.ok, fixed.summary
            step.detail = fixed.summary
        ctx.metric("breaks_diagnosed", 2)
        ctx.metric("forwarding_off_inaddrerrors", dropped)
    finally:
        tunnel.stop_all()


def verify(result: Result) -> None:
    assert result.metrics["breaks_diagnosed"] == 2
    assert result.metrics["forwarding_off_inaddrerrors"] >= COUNT


SCENARIO = Scenario(
    name="routing",
    description="forwarding off, then a missing return route: each break found hop by hop",
    run=run,
    key_metric="breaks_diagnosed",
)
