"""Operating the gateway, the pure parts: pushed DNS on the wire and its limits, JSON logs, the
resolver's host rule and restore, metrics from the counters, reload's diff, the client's route
diff. No root needed."""

from __future__ import annotations

import io
import ipaddress
import json
import logging
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from vpn import log, protocol
from vpn.client import resolver
from vpn.client.tunnel import Tunnel
from vpn.config import ServerConfig, parse_pushed
from vpn.datapath.counters import BatchSizes, Counters
from vpn.errors import ConfigError, ProtocolError, ResolverError
from vpn.server import reload as reload_mod
from vpn.server.metrics import GatewayCollector

BASE = {
    "address": "10.8.0.2/24",
    "server_address": "10.8.0.1",
    "mtu": 1400,
    "routes": ["192.168.60.0/24"],
    "keepalive": 10,
    "dead_peer": 30,
}


def config(**changes: Any) -> protocol.Config:
    return protocol.decode_config(json.dumps({**BASE, **changes}).encode())


# -- the wire ----------------------------------------------------------------------------------


def test_dns_round_trips_and_is_optional() -> None:
    sent = config(dns={"servers": ["192.168.60.5"], "search": ["Lan."]})
    assert sent.dns == (ipaddress.IPv4Address("192.168.60.5"),)
    assert sent.search == ("lan",)
    assert protocol.decode_config(sent.encode()[4:]) == sent
    assert config().dns == () and config().search == ()


@pytest.mark.parametrize(
    "dns",
    [
        ["192.168.60.5"],  # not an object
        {"servers": "192.168.60.5"},
        {"servers": ["192.168.60.5\nnameserver 6.6.6.6"]},
        {"servers": ["evil.example"]},
        {"servers": ["10.0.0.1"] * 9},
        {"servers": [1]},
        {"search": ["lan options ndots:15"]},
        {"search": ["lan\nnameserver 6.6.6.6"]},
        {"search": ["-bad.lan"]},
        {"search": ["a" * 64 + ".lan"]},
        {"search": ["x"] * 9},
        {"search": [""]},
        {"servers": [], "extra": 1},
    ],
)
def test_a_hostile_dns_field_is_a_clear_protocol_error(dns: object) -> None:
    with pytest.raises(ProtocolError, match=r"CONFIG: field '(dns|servers|search)'"):
        config(dns=dns)


def test_a_config_in_the_data_phase_is_an_update_for_the_client() -> None:
    kind = protocol.check_order(protocol.CLIENT_EXPECTS, "data", int(protocol.MsgType.CONFIG))
    assert kind == protocol.MsgType.CONFIG
    assert config().same_link(config(routes=[], dns={"servers": ["10.0.0.53"]}))
    assert not config().same_link(config(mtu=1300))


def test_server_settings_for_dns_are_checked() -> None:
    with pytest.raises(ConfigError, match="--dns"):
        parse_pushed(ServerConfig(dns=["not-an-address"]))
    with pytest.raises(ConfigError, match="--dns-search"):
        parse_pushed(ServerConfig(dns_search=["a b"]))
    pushed = parse_pushed(
        ServerConfig(dns=["10.0.0.53"], dns_search=["lan"], route=["10.1.0.0/16"])
    )
    assert pushed.search == ("lan",) and str(pushed.routes[0]) == "10.1.0.0/16"


# -- logs --------------------------------------------------------------------------------------


def test_json_logs_are_one_parseable_line_even_with_hostile_fields(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = io.StringIO()
    monkeypatch.setattr("sys.stderr", out)
    log.setup("info", "json")
    try:
        evil = "cn\r\nlevel=error event=forged\x1b[2J\u2028\u202e"
        log.event("connect", identity=evil, peer="10.0.0.2:1", count=3, ok=True, path=Path("/x"))
    finally:
        log.setup("info")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert all(32 <= ord(c) < 127 for c in lines[0]), lines[0]
    line = json.loads(lines[0])
    assert line["event"] == "connect" and line["level"] == "info" and "time" in line
    assert line["identity"] == evil and line["count"] == 3 and line["ok"] is True
    assert line["path"] == "/x"


def test_unknown_log_format_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="--log-format"):
        log.setup("info", "xml")
    assert logging.getLogger("vpn").handlers


# -- the resolver ------------------------------------------------------------------------------


def fake_world(tmp_path: Path, *, named: bool, own: bool) -> resolver.ResolvConf:
    """A resolv.conf, a /proc/self/ns/net, and /run/netns/NAME bound to it (or not)."""
    proc, netns_dir, etc_netns = tmp_path / "proc", tmp_path / "run-netns", tmp_path / "etc-netns"
    (proc / "self/ns").mkdir(parents=True)
    netns_dir.mkdir()
    (tmp_path / "nsfs").write_text("")
    os.symlink(tmp_path / "nsfs", proc / "self/ns/net")
    (netns_dir / "other").write_text("")
    if named:
        os.symlink(tmp_path / "nsfs", netns_dir / "lab-client")
    (etc_netns / "lab-client").mkdir(parents=True)
    (etc_netns / "lab-client/resolv.conf").write_text("nameserver 10.0.0.99\noptions ndots:1\n")
    target = etc_netns / "lab-client/resolv.conf" if own else tmp_path / "hosts-resolv.conf"
    if not own:
        target.write_text("nameserver 10.0.0.99\noptions ndots:1\n")
    return resolver.ResolvConf(
        target, tmp_path / "state", proc=proc, netns_dir=netns_dir, etc_netns=etc_netns
    )


def test_in_a_named_namespace_only_its_own_file_may_change(tmp_path: Path) -> None:
    host = fake_world(tmp_path, named=True, own=False)
    assert "host's resolver" in (host.refusal() or "")
    with pytest.raises(ResolverError, match="host's resolver"):
        host.apply([ipaddress.IPv4Address("10.0.0.53")], ["lan"])
    assert host.path.read_text() == "nameserver 10.0.0.99\noptions ndots:1\n"


def test_an_unnamed_namespace_is_refused_when_pid_1_cannot_be_read(tmp_path: Path) -> None:
    unnamed = fake_world(tmp_path, named=False, own=True)
    (unnamed.proc / "1").write_text("")  # /proc/1/root/... fails as an unreadable PID 1 does
    assert "cannot tell whose" in (unnamed.refusal() or "")


def test_apply_restore_and_crash_recovery(tmp_path: Path) -> None:
    mine = fake_world(tmp_path, named=True, own=True)
    original = mine.path.read_text()
    assert mine.refusal() is None
    mine.apply([ipaddress.IPv4Address("10.0.0.53")], ["lan"])
    text = mine.path.read_text()
    assert "nameserver 10.0.0.53\n" in text and "search lan\n" in text
    assert "options ndots:1" in text and "10.0.0.99" not in text
    mine.restore()
    assert mine.path.read_text() == original
    assert not list(mine.state_dir.glob("*.json"))

    crashed = fake_world(tmp_path / "b", named=True, own=True)
    crashed.apply([ipaddress.IPv4Address("10.0.0.53")], [])
    # the process dies here; the next one recovers from the saved copy
    fresh = resolver.ResolvConf(
        crashed.path, crashed.state_dir, proc=crashed.proc,
        netns_dir=crashed.netns_dir, etc_netns=crashed.etc_netns,
    )  # fmt: skip
    fresh.recover()
    assert crashed.path.read_text() == original
    assert not list(crashed.state_dir.glob("*.json"))


def test_a_file_changed_by_someone_else_is_left_alone(tmp_path: Path) -> None:
    mine = fake_world(tmp_path, named=True, own=True)
    mine.apply([ipaddress.IPv4Address("10.0.0.53")], [])
    mine.path.write_text("nameserver 10.9.9.9\n")  # in place: same inode
    mine.restore()
    assert mine.path.read_text() == "nameserver 10.9.9.9\n"


def test_resolvectl_per_link_and_reverted() -> None:
    calls: list[list[str]] = []
    ctl = resolver.Resolvectl("tun0", run=calls.append)
    ctl.apply([ipaddress.IPv4Address("10.0.0.53")], ["lan"])
    ctl.restore()
    assert calls == [
        ["resolvectl", "dns", "tun0", "10.0.0.53"],
        ["resolvectl", "domain", "tun0", "lan"],
        ["resolvectl", "revert", "tun0"],
    ]


# -- the client's route diff -------------------------------------------------------------------


class FakeNet:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def add_route(self, dst: str, *, dev: str) -> None:
        self.calls.append(("add", dst))

    def del_route(self, dst: str) -> None:
        self.calls.append(("del", dst))


def test_an_update_changes_only_the_routes_that_differ() -> None:
    tunnel = Tunnel("tun0")
    net = FakeNet()
    tunnel.net, tunnel.tun = net, SimpleNamespace(name="tun0")  # type: ignore[assignment]
    tunnel.applied = config(routes=["192.168.60.0/24", "10.5.0.0/16"])
    tunnel.apply(config(routes=["192.168.60.0/24", "10.6.0.0/16", "10.8.0.0/25"]))
    assert net.calls == [("del", "10.5.0.0/16"), ("add", "10.6.0.0/16")]  # 10.8.0.0/25: on-link
    assert tunnel.updates == 1 and tunnel.tun is not None


# -- metrics -----------------------------------------------------------------------------------


def session(identity: str, rx: int) -> SimpleNamespace:
    return SimpleNamespace(identity=identity, closed=False, counters=Counters(rx_packets=rx))


def fake_gateway(*sessions: SimpleNamespace, cap: int = 100) -> Any:
    return SimpleNamespace(
        table=SimpleNamespace(connected=lambda: list(sessions)),
        counters=Counters(rx_packets=100, dropped_spoofed=2),
        handshaking=0,
        handshakes=7,
        failures={"certificate": 2},
        admission=SimpleNamespace(auth_refused=1, as_dict=lambda: {"refused_pending": 3}),
        config=SimpleNamespace(metrics_max_identities=cap),
    )


def samples(gateway: Any, batches: BatchSizes | None = None) -> dict[str, float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(gateway, batches or BatchSizes()))
    found = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            found[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return found


def test_metrics_sum_closed_and_live_sessions_and_cap_identities() -> None:
    got = samples(fake_gateway(session("b", 5), session("a", 1), session("c", 4), cap=2))
    assert got["vpn_sessions"] == 3
    assert got["vpn_received_packets_total"] == 110
    assert got["vpn_handshakes_total"] == 7
    assert got["vpn_handshake_failures_total{reason=certificate}"] == 2
    assert got["vpn_dropped_packets_total{reason=spoofed_source}"] == 2
    assert got["vpn_auth_refusals_total"] == 1
    assert got["vpn_admission_events_total{event=refused_pending}"] == 3
    assert got["vpn_client_received_packets_total{identity=a}"] == 1
    assert got["vpn_client_received_packets_total{identity=b}"] == 5
    assert got["vpn_client_received_packets_total{identity=_other}"] == 4
    assert "vpn_client_received_packets_total{identity=c}" not in got


def test_batch_sizes_histogram_is_cumulative() -> None:
    sizes = BatchSizes()
    for n in (1, 1, 3, 300):
        sizes.observe(n)
    got = samples(fake_gateway(), sizes)
    assert got["vpn_batch_packets_bucket{le=1}"] == 2
    assert got["vpn_batch_packets_bucket{le=4}"] == 3
    assert got["vpn_batch_packets_bucket{le=256}"] == 3
    assert got["vpn_batch_packets_bucket{le=+Inf}"] == 4
    assert got["vpn_batch_packets_sum"] == 305


# -- reload ------------------------------------------------------------------------------------


def test_reload_pushes_new_routes_and_names_what_cannot_change_live() -> None:
    sent: list[bytes] = []
    live = SimpleNamespace(address=ipaddress.IPv4Address("10.8.0.2"), closed=False,
                           send_frame=sent.append)  # fmt: skip
    running = ServerConfig(route=["192.168.60.0/24"])
    gateway: Any = SimpleNamespace(
        config=running,
        reload_crl=lambda force: None,
        table=SimpleNamespace(connected=lambda: [live]),
        pushed=parse_pushed(running),
    )
    gateway.config_for = lambda address: config(
        routes=[str(r) for r in gateway.pushed.routes],
        dns={"servers": [str(a) for a in gateway.pushed.dns]},
    )
    new = ServerConfig(route=["192.168.60.0/24", "10.9.0.0/24"], dns=["192.168.60.5"], mtu=1300)
    answer = reload_mod.reload(gateway, lambda: new)
    assert answer["applied"] == ["route", "dns"] and answer["not_applied"] == ["mtu"]
    assert running.mtu == 1400 and running.route == new.route
    (frame,) = sent
    pushed = protocol.decode_config(frame[4:])
    assert ipaddress.IPv4Network("10.9.0.0/24") in pushed.routes
    assert pushed.dns == (ipaddress.IPv4Address("192.168.60.5"),)

    broken = reload_mod.reload(gateway, lambda: ServerConfig(dns=["nope"]))
    assert broken["ok"] is False and running.dns == ["192.168.60.5"]
    assert len(sent) == 1
