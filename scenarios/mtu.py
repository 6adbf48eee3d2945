"""Packet sizes against the tunnel's MTU (pushed by the server): what passes with and without
DF, who says "too long", and TCP that adapts to it in both directions without stalling. For
IPv6 (a dual-stack lab): the gateway's kernel answering ICMPv6 Packet Too Big for its TUN, the
path MTU learned from it, the same sizes from the client, and the tunnel at least IPv6's 1280
bytes."""

from __future__ import annotations

import json
import re

from scenarios.lab_faults import Up, address, stream, tunnel_up, vpn_address
from scenarios.probes import ping
from scenarios.runner import Context, Result, Scenario
from scenarios.tunnel import NO_IPV6, TUN

SIZES = (1400, 1472)  # ICMP payloads: 1428 and 1500 bytes on the wire, both above the tun's MTU
HEADERS = 28  # IPv4 + ICMP
TOO_LONG = r"message too long, mtu=(\d+)"  # ping's words for EMSGSIZE
FRAG_NEEDED = r"From (\S+) icmp_seq=1 Frag needed and DF set \(mtu = (\d+)\)"
HEADERS6 = 48  # IPv6 + ICMPv6
IPV6_MIN_MTU = 1280  # RFC 8200 §5: every link carries 1280 bytes
TOO_LONG6 = r"message too long, mtu: ?(\d+)"  # ping -6's words for EMSGSIZE
TOO_BIG6 = r"From (\S+) icmp_seq=1 Packet too big: mtu=(\d+)"
TRANSFER = 5 * 1024 * 1024  # bytes of TCP each way


def run(ctx: Context) -> None:
    with tunnel_up(ctx) as up:
        backend, tunnel, client, host, target = up.backend, up.tunnel, up.client, up.host, up.target
        with ctx.step(f"{client}'s {TUN} has the MTU the server pushed") as step:
            (link,) = json.loads(backend.ensure(client, ["ip", "-j", "link", "show", TUN]))
            mtu = int(link["mtu"])
            step.detail = f"mtu {mtu}"
            ctx.metric("tun_mtu", mtu)

        largest = mtu - HEADERS
        for size, df in [(largest, True), *((s, d) for s in SIZES for d in (True, False))]:
            mode = "do" if df else "dont"
            fits = size + HEADERS <= mtu
            expect = "answered" if fits or not df else f'"message too long, mtu={mtu}"'
            with ctx.step(f"{client} → {host}: ping -s {size} -M {mode} is {expect}") as step:
                seen = ping(backend, client, target, "-M", mode, size=size)
                if fits or not df:
                    assert seen.ok, seen.output
                    step.detail = f"{size + HEADERS}-byte packets, {seen.summary}"
                else:
                    said = re.search(TOO_LONG, seen.output)
                    assert seen.received == 0 and said, f"expected a local error: {seen.output}"
                    assert int(said[1]) == mtu, said[0]
                    step.detail = f"refused on {client} before the tunnel: {said[0]}"
        ctx.metric("largest_df_payload", largest)

        gateway = address(backend, tunnel.gateway.name)
        far = vpn_address(up.status)
        too_big = f"{host} → {client}: DF too big for {TUN} gets Frag needed from the gateway"
        with ctx.step(too_big) as step:
            seen = ping(backend, host, far, "-M", "do", count=2, size=SIZES[0])
            frag = re.search(FRAG_NEEDED, seen.output)
            assert frag, f"expected Frag needed from {gateway}: {seen.output}"
            assert (frag[1], int(frag[2])) == (gateway, mtu), frag[0]
            cached = re.search(TOO_LONG, seen.output)
            assert cached and int(cached[1]) == mtu, f"path MTU not learned: {seen.output}"
            step.detail = f"{frag[0]}; then {host} knows: {cached[0]}"
        with ctx.step(f"{host} → {client}: {SIZES[1]} bytes without DF, fragmented, answered") as s:
            seen = ping(backend, host, far, "-M", "dont", size=SIZES[1])
            assert seen.ok, seen.output
            s.detail = seen.summary

        path_mtu6(ctx, up, mtu)

        for upload, way in ((True, f"{client} → {host}"), (False, f"{host} → {client}")):
            with ctx.step(f"TCP {way}: 5 MiB through the tunnel, intact, no stall") as step:
                got = stream(tunnel, client, host, TRANSFER, upload=upload, timeout=60)
                assert got.bytes == TRANSFER, f"{got.bytes} of {TRANSFER} bytes arrived"
                assert got.intact, "the bytes that arrived differ from those sent"
                step.detail = f"{got.bytes} bytes intact in {got.seconds} s, {got.mbit} Mbit/s"
                ctx.metric("tcp_up_mbit" if upload else "tcp_down_mbit", got.mbit)


def path_mtu6(ctx: Context, up: Up, mtu: int) -> None:
    """The IPv6 steps. No router fragments IPv6: a LAN host learns the tunnel's MTU from the
    gateway's Packet Too Big first (its replies to the client's big pings need it too), then
    the client's sizes, with and without DF (fragmented at the source)."""
    backend, tunnel, client, host = up.backend, up.tunnel, up.client, up.host
    target6 = backend.topology.node(host).attachment("lan").address6
    gateway6 = tunnel.gateway.attachment("lan").address6
    far6 = str(up.status.get("address6") or "").split("/")[0]
    largest6 = mtu - HEADERS6
    minimum = f"the tunnel MTU is at least IPv6's minimum, {IPV6_MIN_MTU}"
    too_big = f"{host} → {client} over IPv6: too big for {TUN} gets Packet Too Big from the gateway"
    learned_steps = [
        f"{host} → {client} over IPv6: ping -s {largest6} -M do, the learned size, answered",
        f"{host} → {client} over IPv6: {SIZES[1]} bytes fragmented at {host}, answered",
    ]
    cases = [(largest6, True), *((s, d) for s in SIZES for d in (True, False))]
    names = [f"{client} → {host} over IPv6: ping -s {size} -M {'do' if df else 'dont'}"
             for size, df in cases]  # fmt: skip
    if not (target6 and gateway6 and far6):
        for name in [minimum, too_big, *learned_steps, *names]:
            ctx.skip(name, NO_IPV6)
        return
    target6, gateway6 = str(target6), str(gateway6)
    ctx.check(
        minimum, mtu >= IPV6_MIN_MTU, f"{TUN} mtu {mtu}, {client} has {up.status['address6']}"
    )

    with ctx.step(too_big) as step:
        seen = ping(backend, host, far6, "-6", "-M", "do", count=2, size=SIZES[0])
        said = re.search(TOO_BIG6, seen.output)
        assert said, f"expected Packet Too Big from {gateway6}: {seen.output}"
        assert (said[1], int(said[2])) == (gateway6, mtu), said[0]
        cached = re.search(TOO_LONG6, seen.output)
        assert cached and int(cached[1]) == mtu, f"path MTU not learned: {seen.output}"
        route = backend.ensure(host, ["ip", "-6", "route", "get", far6]).strip()
        learned = re.search(r"\bmtu (\d+)", route)
        assert learned and int(learned[1]) == mtu, f"no path MTU {mtu} in the route: {route}"
        step.detail = f"{said[0]}; then {cached[0]}; route get: … mtu {learned[1]}"
        ctx.metric("packet_too_big_mtu", int(said[2]))
    with ctx.step(learned_steps[0]) as step:
        seen = ping(backend, host, far6, "-6", "-M", "do", count=2, size=largest6)
        assert seen.ok, seen.output
        step.detail = f"{largest6 + HEADERS6}-byte packets: {seen.summary}"
    with ctx.step(learned_steps[1]) as step:
        seen = ping(backend, host, far6, "-6", "-M", "dont", size=SIZES[1])
        assert seen.ok, seen.output
        step.detail = f"{SIZES[1] + HEADERS6} bytes in fragments of at most {mtu}: {seen.summary}"

    for (size, df), name in zip(cases, names, strict=True):
        fits = size + HEADERS6 <= mtu
        with ctx.step(name) as step:
            seen = ping(backend, client, target6, "-6", "-M", "do" if df else "dont", size=size)
            if fits or not df:
                assert seen.ok, seen.output
                how = "" if fits else f", fragmented by {client}"
                step.detail = f"{size + HEADERS6}-byte packets{how}: {seen.summary}"
            else:
                said = re.search(TOO_LONG6, seen.output)
                assert seen.received == 0 and said, f"expected a local error: {seen.output}"
                assert int(said[1]) == mtu, said[0]
                step.detail = f"refused on {client} before the tunnel: {said[0]}"
    ctx.metric("largest_df_payload6", largest6)


def verify(result: Result) -> None:
    assert result.metrics["largest_df_payload"] == result.metrics["tun_mtu"] - HEADERS
    if "largest_df_payload6" in result.metrics:  # a lab without IPv6 records none
        assert result.metrics["largest_df_payload6"] == result.metrics["tun_mtu"] - HEADERS6
        assert result.metrics["packet_too_big_mtu"] == result.metrics["tun_mtu"] >= IPV6_MIN_MTU
    assert result.metrics["tcp_up_mbit"] > 0 and result.metrics["tcp_down_mbit"] > 0


SCENARIO = Scenario(
    name="mtu",
    description="pings around the tunnel MTU with and without DF, IPv4 and IPv6; TCP adapts",
    run=run,
    key_metric="largest_df_payload",
)
