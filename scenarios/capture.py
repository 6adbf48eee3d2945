"""What an eavesdropper on the internet segment records, from before the client connects: a pcap
kept under results/ for Wireshark, decoded here — a TLS 1.3 handshake, then only application
data records, and no inner packet in clear."""

from __future__ import annotations

import ipaddress
import shutil
import socket
from collections import Counter
from pathlib import Path

import dpkt

from scenarios.lab_faults import address, connect, stream, vpn_address
from scenarios.pcap import TLS_APPLICATION_DATA, ip_packets, judge
from scenarios.probes import ping
from scenarios.runner import Context, Result, Scenario, StepFailed
from scenarios.tunnel import Tunnel

PATTERN = "c0ffee15deadbeef"  # ping payload: seen in the capture only if the tunnel leaks
STREAM_BYTES = 256 * 1024  # the stream's bytes are 0, 1, … 255 repeated
TLS12, TLS13 = 0x0303, 0x0304
HANDSHAKE, CLIENT_HELLO, SERVER_HELLO = 22, 1, 2
RECORD_TYPES = {20, 21, 22, 23}  # change_cipher_spec, alert, handshake, application_data
SUPPORTED_VERSIONS = 0x002B
IGMP_REPORTS = "→ 224.0.0.22"


def run(ctx: Context) -> None:
    backend = ctx.backend
    tunnel = Tunnel(backend)
    client = tunnel.clients[0]
    hosts = {name: address(backend, name) for name in tunnel.hosts}
    try:
        with backend.capture(tunnel.network, f"capture-{backend.name}") as capture:
            status = connect(ctx, tunnel, client)[client]
            with ctx.step("traffic through the tunnel while the capture runs") as step:
                for name, target in hosts.items():
                    seen = ping(backend, client, target, "-p", PATTERN, count=2)
                    assert seen.ok, f"{name}: {seen.output}"
                sent = stream(tunnel, client, tunnel.hosts[0], STREAM_BYTES, upload=True)
                assert sent.intact and sent.bytes == STREAM_BYTES, sent
                step.detail = f"pings to {len(hosts)} hosts, {STREAM_BYTES} bytes of TCP"
        with ctx.step("pcap saved for Wireshark") as step:
            saved = ctx.results_dir / f"capture-{backend.name}.pcap"
            shutil.copyfile(capture.path, saved)
            step.detail = f"{saved} ({saved.stat().st_size} bytes)"
            ctx.metric("pcap", str(saved))

        with ctx.step("no inner packet in clear: only the tunnel's TCP on the segment") as step:
            secrets = {
                "ping payload": bytes.fromhex(PATTERN) * 2,
                "stream bytes": bytes(range(64)),
                "client's VPN address": ipaddress.IPv4Address(vpn_address(status)).packed,
            }
            for name, target in hosts.items():
                secrets[f"{name}'s address"] = ipaddress.IPv4Address(target).packed
            verdict = judge(capture.path, tunnel.port, secrets)
            assert verdict.tls > 0, f"no segment of port {tunnel.port} ({verdict.packets} packets)"
            # A freshly made segment's own interfaces announce multicast membership (IGMP to
            # 224.0.0.22): link-local control, not something the tunnel carries.
            igmp = [o for o in verdict.others if o.startswith("proto 2 ") and IGMP_REPORTS in o]
            others = [o for o in verdict.others if o not in igmp]
            assert not others, f"not tunnelled: {', '.join(others[:5])}"
            assert not verdict.leaks, "; ".join(verdict.leaks)
            step.detail = (
                f"{verdict.tls} TLS segments of {verdict.packets} packets, no secret seen"
                + (f" ({len(igmp)} IGMP membership reports aside)" if igmp else "")
            )
            ctx.metric("tls_segments", verdict.tls)

        client_side, server_side = tls_streams(capture.path, tunnel.port)
        with ctx.step("the handshake negotiates TLS 1.3 (ServerHello supported_versions)") as step:
            hello = hello_versions(client_side, CLIENT_HELLO)
            chosen = hello_versions(server_side, SERVER_HELLO)
            assert chosen == [TLS13], f"ServerHello supported_versions: {chosen}"
            assert TLS13 in hello, f"ClientHello offers {hello}"
            step.detail = (
                f"ClientHello offers {', '.join(f'{v:#06x}' for v in hello)}, "
                f"ServerHello picks {chosen[0]:#06x}"
            )
            ctx.metric("tls_version", f"{chosen[0]:#06x}")
        with ctx.step("after it, application data records (type 23, legacy version 0x0303)") as s:
            seen = Counter()
            for side in (client_side, server_side):
                for kind, version, _ in records(side):
                    assert kind in RECORD_TYPES, f"record of unknown type {kind}"
                    wrong = kind == TLS_APPLICATION_DATA and version != TLS12
                    assert not wrong, f"application data with legacy version {version:#06x}"
                    seen[kind] += 1
            assert seen[TLS_APPLICATION_DATA] > 0, f"records by type: {dict(seen)}"
            s.detail = f"records by type: {dict(sorted(seen.items()))}"
            ctx.metric("application_data_records", seen[TLS_APPLICATION_DATA])
    finally:
        tunnel.stop_all()


# -- reading the TLS connection back out of the pcap ---------------------------------------------
def tls_streams(path: Path, port: int) -> tuple[bytes, bytes]:
    """The first captured connection to port, reassembled: (client's bytes, server's bytes)."""
    starts: dict[tuple[str, int, str, int], int] = {}
    segments: dict[tuple[str, int, str, int], dict[int, bytes]] = {}
    for packet in ip_packets(path):
        segment = getattr(packet, "data", None)
        if not isinstance(segment, dpkt.tcp.TCP) or port not in (segment.sport, segment.dport):
            continue
        key = (socket.inet_ntoa(packet.src), segment.sport, socket.inet_ntoa(packet.dst),
               segment.dport)  # fmt: skip
        if segment.flags & dpkt.tcp.TH_SYN:
            starts.setdefault(key, segment.seq + 1)
        elif segment.data:
            segments.setdefault(key, {})[segment.seq] = bytes(segment.data)
    opened = [k for k in starts if k[3] == port]
    if not opened:
        raise StepFailed("no connection to the VPN port starts in the capture (SYN missing)")
    up = opened[0]
    down = (up[2], up[3], up[0], up[1])
    if down not in starts:
        raise StepFailed(f"the server's SYN-ACK to {up[0]}:{up[1]} is not in the capture")
    return _joined(starts[up], segments.get(up, {})), _joined(starts[down], segments.get(down, {}))


def _joined(start: int, segments: dict[int, bytes]) -> bytes:
    """Bytes in order from start, each once (retransmissions overlap), up to the first hole."""
    out, nxt = bytearray(), start
    for seq in sorted(segments, key=lambda s: (s - start) % 2**32):
        offset = (nxt - seq) % 2**32
        data = segments[seq]
        if offset >= 2**31:  # a hole before this segment
            break
        out += data[offset:]
        nxt = (nxt + max(0, len(data) - offset)) % 2**32
    return bytes(out)


def records(data: bytes) -> list[tuple[int, int, bytes]]:
    """TLS records (type, legacy version, body) until the data ends or a record is cut."""
    found, at = [], 0
    while at + 5 <= len(data):
        kind, version = data[at], int.from_bytes(data[at + 1 : at + 3])
        end = at + 5 + int.from_bytes(data[at + 3 : at + 5])
        if end > len(data):
            break
        found.append((kind, version, data[at + 5 : end]))
        at = end
    return found


def hello_versions(data: bytes, message: int) -> list[int]:
    """The supported_versions a ClientHello offers or a ServerHello picks (first record)."""
    handshakes = [body for kind, _, body in records(data) if kind == HANDSHAKE]
    if not handshakes or handshakes[0][0] != message:
        raise StepFailed(f"the connection does not start with handshake message {message}")
    hello = handshakes[0]
    at = 4 + 2 + 32  # type + length, legacy_version, random
    at += 1 + hello[at]  # session id
    if message == CLIENT_HELLO:
        at += 2 + int.from_bytes(hello[at : at + 2])  # cipher suites
        at += 1 + hello[at]  # compression methods
    else:
        at += 2 + 1  # cipher suite, compression method
    end = at + 2 + int.from_bytes(hello[at : at + 2])
    at += 2
    while at + 4 <= end:
        kind, size = int.from_bytes(hello[at : at + 2]), int.from_bytes(hello[at + 2 : at + 4])
        value = hello[at + 4 : at + 4 + size]
        if kind == SUPPORTED_VERSIONS:
            listed = value[1:] if message == CLIENT_HELLO else value
            return [int.from_bytes(listed[i : i + 2]) for i in range(0, len(listed), 2)]
        at += 4 + size
    raise StepFailed("no supported_versions extension: not a TLS 1.3 hello")


def verify(result: Result) -> None:
    assert result.metrics["tls_version"] == "0x0304", result.metrics
    assert result.metrics["application_data_records"] > 0
    assert Path(result.metrics["pcap"]).stat().st_size > 0


SCENARIO = Scenario(
    name="capture",
    description="a pcap of the internet segment: a TLS 1.3 handshake, then only ciphertext",
    run=run,
    key_metric="tls_version",
)
