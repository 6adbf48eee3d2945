"""python -m bench.loadgen: many real VPN sessions from one process, for `bench.scale`.

A real client needs a TUN device and a namespace of its own; a thousand of them would measure
the machine, not the gateway. Each session here is what the gateway sees of a client: its own
TCP connection, a full TLS 1.3 handshake with a certificate of its own (distinct identities,
or the gateway would replace one session by the next), HELLO, CONFIG, then DATA frames, all
through the project's own `vpn.datapath.channel.Channel`. No TUN on this side: DATA frames
carry ICMP echo requests from the leased address to the gateway's own tunnel address, so the
gateway's kernel answers and each reply comes back through the gateway's TUN, routing and TLS —
the path every client's traffic takes, minus the LAN.

Timeline: connect every session (at most --concurrency handshakes at once), write
`connected.json` to --state, wait for a file named `go` there, keep --window echo requests in
flight per session for --seconds (a session without a reply for a second gets a new window:
dropped packets must not silence it), write the result to --out.

With --ping-interval S the traffic is pings instead: every session sends one echo request
each S seconds, spread evenly over the interval, and answers are counted, not chased; the
result then has pings sent, answered and lost (`bench.load`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import ssl
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from vpn import packets, protocol
from vpn.credentials.tls import client_context
from vpn.datapath.channel import Channel
from vpn.datapath.handshake import handshake, tune_socket
from vpn.protocol import MsgType

VNET_HDR = bytes(protocol.VNET_HDR_LEN)  # "no offload" in front of each packet


class Session(Channel):
    """One simulated client: counts echo replies and sends a new request for each."""

    def __init__(self, gen: Generator, sock: ssl.SSLSocket, name: str) -> None:
        super().__init__(gen.loop, sock)
        self.gen = gen
        self.name = name
        self.phase = "config"
        self.configured: asyncio.Future[protocol.Config] = gen.loop.create_future()
        self.request = b""
        self.reply_offset = 0
        self.replies = 0
        self.pings = 0  # echo requests sent in ping mode
        self.reason = ""

    def on_control(self, kind: int, payload: memoryview) -> None:
        msg = protocol.check_order(protocol.CLIENT_EXPECTS, self.phase, kind)
        if msg == MsgType.CONFIG:
            config = protocol.decode_config(payload)
            self.phase = "data"
            self.offset = protocol.VNET_HDR_LEN if config.offload else 0
            packet = packets.icmp_echo(
                str(config.address.ip),
                str(config.server_address),
                ident=hash(self.name) & 0xFFFF,
                data=bytes(max(0, self.gen.size - 28)),
            )
            self.request = (VNET_HDR if config.offload else b"") + packet
            if not self.configured.done():
                self.configured.set_result(config)
        elif msg in (MsgType.ERROR, MsgType.BYE):
            reason, _ = protocol.decode_reason(payload)
            self.close(f"gateway: {reason}", send_error=False)

    def on_packets(self, packets_: list[memoryview]) -> None:
        off = self.offset
        replies = 0
        for packet in packets_:
            # IPv4 with a 20-byte header, protocol ICMP, type 0 (echo reply)
            if len(packet) > off + 20 and packet[off + 9] == 1 and packet[off + 20] == 0:
                replies += 1
        self.replies += replies
        if self.gen.sending and not self.gen.args.ping_interval:
            for _ in range(replies):
                self.queue_packet(self.request)

    def on_closed(self, reason: str) -> None:
        self.reason = reason
        if not self.configured.done():
            self.configured.set_exception(ConnectionError(reason))


class Generator:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.loop = asyncio.get_running_loop()
        self.size = args.size
        self.sending = False
        self.sessions: list[Session] = []
        self.failures: list[str] = []
        self.connect_times: list[float] = []
        self.rearmed = 0  # windows sent again after a second without a reply
        # Contexts are made before the clock starts: loading a key and a CA costs milliseconds
        # in OpenSSL 3, which would be counted against the gateway's handshakes otherwise.
        self.contexts = [
            client_context(
                args.certs / f"{args.prefix}{i:04d}.crt",
                args.certs / f"{args.prefix}{i:04d}.key",
                args.ca,
            )
            for i in range(args.clients)
        ]

    async def connect(self, index: int, gate: asyncio.Semaphore) -> None:
        args = self.args
        name = f"{args.prefix}{index:04d}"
        context = self.contexts[index]
        async with gate:
            started = time.monotonic()
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await asyncio.wait_for(self.loop.sock_connect(sock, (args.host, args.port)), 20)
                tune_socket(sock)
                tls = context.wrap_socket(
                    sock, server_hostname=args.server_name, do_handshake_on_connect=False
                )
                await asyncio.wait_for(handshake(self.loop, tls), 20)
            except (OSError, ssl.SSLError, TimeoutError) as exc:
                sock.close()
                self.failures.append(f"{name}: {type(exc).__name__}: {exc}")
                return
            session = Session(self, tls, name)
            hello = protocol.Hello(
                version=protocol.VERSION,
                name=name,
                features=frozenset({protocol.FEATURE_OFFLOAD}),
            )
            session.send_frame(hello.encode())
            try:
                await asyncio.wait_for(asyncio.shield(session.configured), 20)
            except (ConnectionError, TimeoutError) as exc:
                session.close("no CONFIG", send_error=False)
                self.failures.append(f"{name}: no CONFIG: {exc}")
                return
            self.connect_times.append(time.monotonic() - started)
            self.sessions.append(session)

    async def keepalive(self) -> None:
        """Keepalives for idle sessions; while sending, a new window of requests for any
        session that heard no reply for a second (its requests or replies were dropped, e.g.
        by a full TUN queue on the gateway): a loss must not silence a session for good."""
        seen: dict[int, int] = {}
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for session in self.sessions:
                if session.closed:
                    continue
                if self.args.ping_interval:
                    continue  # pings keep every session busy; a lost one is counted, not chased
                if self.sending and seen.get(id(session)) == session.replies:
                    self.rearmed += 1
                    for _ in range(self.args.window):
                        session.queue_packet(session.request)
                    session.flush()
                elif now - session.last_tx > 1.0:
                    session.send_frame(protocol.KEEPALIVE_FRAME)
                seen[id(session)] = session.replies

    async def ping(self, sessions: list[Session], interval: float, until: float) -> None:
        """One echo request per session every `interval` seconds, in 50 slices per interval."""
        slices = 50
        size = -(-len(sessions) // slices)
        groups = [sessions[i : i + size] for i in range(0, len(sessions), size)]
        tick = interval / max(1, len(groups))
        next_at = time.monotonic()
        while time.monotonic() < until:
            for group in groups:
                for session in group:
                    if not session.closed:
                        session.pings += 1
                        session.queue_packet(session.request)
                        session.flush()
                next_at += tick
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                if time.monotonic() >= until:
                    return

    async def run(self) -> dict[str, Any]:
        args = self.args
        gate = asyncio.Semaphore(args.concurrency)
        cpu0 = _cpu()
        started = time.monotonic()
        await asyncio.gather(*(self.connect(i, gate) for i in range(args.clients)))
        connect_seconds = time.monotonic() - started
        connect_cpu = _cpu() - cpu0
        timer = self.loop.create_task(self.keepalive())
        connected = {
            "clients": args.clients,
            "connected": len(self.sessions),
            "failed": len(self.failures),
            "failures": self.failures[:10],
            "connect_seconds": round(connect_seconds, 3),
            "handshakes_per_s": round(len(self.sessions) / connect_seconds, 1),
            "connect_ms_median": _ms(statistics.median(self.connect_times or [0])),
            "connect_ms_max": _ms(max(self.connect_times or [0])),
            "generator_connect_cpu_s": round(connect_cpu, 2),
        }
        _write(args.state / "connected.json", connected)
        go = args.state / "go"
        deadline = time.monotonic() + args.wait
        while not go.exists():
            if time.monotonic() > deadline:
                raise SystemExit(f"loadgen: no 'go' file in {args.state} within {args.wait:g} s")
            await asyncio.sleep(0.05)
        alive = [s for s in self.sessions if not s.closed]
        for session in alive:
            session.replies = 0
        cpu0 = _cpu()
        self.sending = True
        began = time.monotonic()
        if args.ping_interval:
            await self.ping(alive, args.ping_interval, began + args.seconds)
            await asyncio.sleep(2.0)  # the last answers on their way
        else:
            for session in alive:
                for _ in range(args.window):
                    session.queue_packet(session.request)
                session.flush()
            await asyncio.sleep(args.seconds)
        counts = [s.replies for s in alive]
        elapsed = time.monotonic() - began
        self.sending = False
        data_cpu = _cpu() - cpu0
        timer.cancel()
        packet_bytes = len(alive[0].request) - alive[0].offset if alive else 0
        rates = [c * packet_bytes * 8 / elapsed / 1e6 for c in counts]
        result = {
            **connected,
            "alive_after": sum(1 for s in self.sessions if not s.closed),
            "closed_reasons": sorted({s.reason for s in self.sessions if s.closed})[:5],
            "seconds": round(elapsed, 2),
            "window": args.window,
            "packet_bytes": packet_bytes,
            "echoes": sum(counts),
            "aggregate_mbps": round(sum(rates), 1),
            "per_session_mbps": _spread(rates),
            "fairness_jain": _jain(rates),
            "windows_rearmed": self.rearmed,
            "pings_sent": sum(s.pings for s in alive),
            "pings_answered": sum(min(s.replies, s.pings) for s in alive)
            if args.ping_interval
            else 0,
            "sessions_lost": sum(1 for s in alive if s.closed),
            "generator_data_cpu_s": round(data_cpu, 2),
        }
        for session in self.sessions:
            session.close("load generator done", kind=MsgType.BYE)
        return result


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def _spread(values: list[float]) -> dict[str, float]:
    if not values:
        return {"min": 0.0, "median": 0.0, "max": 0.0}
    return {
        "min": round(min(values), 3),
        "median": round(statistics.median(values), 3),
        "max": round(max(values), 3),
    }


def _jain(values: list[float]) -> float:
    """Jain's fairness index: 1.0 when every session got the same, 1/n when one got all."""
    total = sum(values)
    squares = sum(v * v for v in values)
    return round(total * total / (len(values) * squares), 4) if squares else 0.0


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    parser.add_argument("--server", required=True, help="HOST:PORT of the gateway")
    parser.add_argument("--server-name", required=True, help="name in the gateway's certificate")
    parser.add_argument("--ca", type=Path, required=True)
    parser.add_argument(
        "--certs", type=Path, required=True, help="directory of PREFIXNNNN.crt/.key"
    )
    parser.add_argument("--prefix", default="load")
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=32, help="handshakes in flight")
    parser.add_argument("--window", type=int, default=4, help="echo requests in flight each")
    parser.add_argument("--size", type=int, default=1400, help="IP packet size of each echo")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--ping-interval", type=float, default=0.0, help="ping mode: one echo each S seconds"
    )
    parser.add_argument("--wait", type=float, default=60.0, help="seconds to wait for 'go'")
    parser.add_argument("--state", type=Path, required=True, help="directory for the handshake")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    host, _, port = args.server.rpartition(":")
    args.host, args.port = host, int(port)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.clients + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.clients + 1024), hard))

    async def go() -> dict[str, Any]:
        return await Generator(args).run()

    result = asyncio.run(go())
    _write(args.out, result)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
