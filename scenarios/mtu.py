"""Packet sizes against the tunnel's MTU (pushed by the server): what passes with and without
DF, who says "too long", and TCP that adapts to it in both directions without stalling."""

from __future__ import annotations

import json
import re

from scenarios.lab_faults import address, stream, tunnel_up, vpn_address
from scenarios.probes import ping
from scenarios.runner import Context, Result, Scenario
from scenarios.tunnel import TUN

SIZES = (1400, 1472)  # ICMP payloads: 1428 and 1500 bytes on the wire, both above the tun's MTU
HEADERS = 28  # IPv4 + ICMP
TOO_LONG = r"message too long, mtu=(\d+)"  # ping's words for EMSGSIZE
FRAG_NEEDED = r"From (\S+) icmp_seq=1 Frag needed and DF set \(mtu = (\d+)\)"
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

        for upload, way in ((True, f"{client} → {host}"), (False, f"{host} → {client}")):
            with ctx.step(f"TCP {way}: 5 MiB through the tunnel, intact, no stall") as step:
                got = stream(tunnel, client, host, TRANSFER, upload=upload, timeout=60)
                assert got.bytes == TRANSFER, f"{got.bytes} of {TRANSFER} bytes arrived"
                assert got.intact, "the bytes that arrived differ from those sent"
                step.detail = f"{got.bytes} bytes intact in {got.seconds} s, {got.mbit} Mbit/s"
                ctx.metric("tcp_up_mbit" if upload else "tcp_down_mbit", got.mbit)


def verify(result: Result) -> None:
    assert result.metrics["largest_df_payload"] == result.metrics["tun_mtu"] - HEADERS
    assert result.metrics["tcp_up_mbit"] > 0 and result.metrics["tcp_down_mbit"] > 0


SCENARIO = Scenario(
    name="mtu",
    description="pings around the tunnel MTU with and without DF; TCP adapts both ways",
    run=run,
    key_metric="largest_df_payload",
)
