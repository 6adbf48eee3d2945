"""Operating the gateway, end to end in throwaway namespaces: Prometheus metrics that move with
the traffic, name servers pushed and resolved through the tunnel (and the resolver given back),
routes pushed live on reload without a reconnect, and JSON logs.

The host's /etc/resolv.conf is checked before and after every test: no test may change it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.netns.harness import (
    ETC_NETNS,
    HOST,
    LAN,
    RESOLV_CONF,
    Testbed,
    client_args,
    connected,
    server_args,
    wait_for,
)
from vpn.credentials import pki as pki_mod

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="needs root for network namespaces and TUN devices (run as root: sudo make test)",
)
METRICS = "127.0.0.1:9109"
HOST_RESOLV = Path("/etc/resolv.conf")


def _digest() -> str:
    return hashlib.sha256(HOST_RESOLV.read_bytes()).hexdigest() if HOST_RESOLV.exists() else ""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return pki_mod.lab_pki(tmp_path_factory.mktemp("pki"), clients=("client1", "client2"))


@pytest.fixture
def bed(bed: Testbed) -> Iterator[Testbed]:
    """The shared testbed (tests/netns/conftest.py), and the host's resolver checked untouched."""
    before = _digest()
    yield bed
    assert _digest() == before, "the host's /etc/resolv.conf changed"


def start_server(bed: Testbed, args: list[str]):
    server = bed.spawn(bed.gateway, "server", args)
    wait_for("the server to listen", lambda: "listening" in server.output() or not server.alive())
    assert server.alive(), server.output()
    return server


def start_client(bed: Testbed, pki: dict[str, Path], name: str, *extra: str, log: str = ""):
    if name in bed.clients:  # the same namespace again: its gateway address by its index
        gateway = f"10.201.{list(bed.clients).index(name) + 1}.1"
    else:
        gateway = bed.add_client(name)
    return bed.spawn(bed.clients[name], log or name, client_args(pki["dir"], name, gateway, *extra))


def scrape(bed: Testbed) -> dict[str, float]:
    """Every sample of the gateway's /metrics, as 'name{label=value}' → value."""
    code = f"import urllib.request;print(urllib.request.urlopen('http://{METRICS}/metrics').read().decode())"
    result = bed.run(bed.gateway, sys.executable, "-c", code, timeout=10)
    assert result.returncode == 0, result.stderr
    samples = {}
    for family in text_string_to_metric_families(result.stdout):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return samples


def test_metrics_are_scraped_and_move_with_the_traffic(bed: Testbed, pki: dict[str, Path]) -> None:
    start_server(bed, server_args(pki, "--metrics", METRICS, "--metrics-max-identities", "1"))
    start_client(bed, pki, "client1")
    start_client(bed, pki, "client2")
    for name in ("client1", "client2"):
        wait_for(f"{name} to connect", lambda n=name: connected(bed, bed.clients[n]))
    before = scrape(bed)
    assert before["vpn_sessions"] == 2
    assert before["vpn_handshakes_total"] >= 2
    assert bed.ping(bed.clients["client1"], HOST, count=5)
    after = scrape(bed)
    assert after["vpn_received_packets_total"] >= before["vpn_received_packets_total"] + 5
    assert after["vpn_sent_packets_total"] >= before["vpn_sent_packets_total"] + 5
    assert after["vpn_received_bytes_total"] > before["vpn_received_bytes_total"]
    mine = "vpn_client_received_packets_total{identity=client1}"
    assert after[mine] >= before[mine] + 5, after
    # the cap: one identity of its own, the other summed as _other
    assert "vpn_client_received_packets_total{identity=_other}" in after
    assert "vpn_client_received_packets_total{identity=client2}" not in after
    assert after["vpn_batch_packets_count"] > before["vpn_batch_packets_count"]
    assert after["vpn_dropped_packets_total{reason=spoofed_source}"] == 0


def _dnsmasq(bed: Testbed) -> None:
    if shutil.which("dnsmasq") is None:
        pytest.skip("dnsmasq is missing (scripts/deps.sh installs dnsmasq-base)")
    bed.spawn_command(bed.host, "dnsmasq", [
        "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
        f"--listen-address={HOST}", "--bind-interfaces", "--pid-file=", "--user=root",
        f"--host-record=host1.lan,{HOST}", "--log-facility=-",
    ])  # fmt: skip


def test_pushed_name_server_resolves_a_lan_name_and_the_resolver_comes_back(
    bed: Testbed, pki: dict[str, Path], tmp_path: Path
) -> None:
    _dnsmasq(bed)
    start_server(bed, server_args(pki, "--dns", HOST, "--dns-search", "lan"))
    state = str(tmp_path / "state")
    client = start_client(bed, pki, "client1", "--dns-state-dir", state)
    ns = bed.clients["client1"]
    own = ETC_NETNS / ns / "resolv.conf"
    status = wait_for("client1 to connect", lambda: connected(bed, ns))
    assert status["dns"] == [HOST] and status["search"] == ["lan"]
    wait_for("the pushed name server", lambda: f"nameserver {HOST}" in own.read_text())
    assert "search lan" in own.read_text()
    found = bed.run(ns, "getent", "ahostsv4", "host1").stdout
    assert HOST in found, f"host1 did not resolve through the tunnel: {found!r}"
    client.stop(signal.SIGTERM)
    assert own.read_text() == RESOLV_CONF, "SIGTERM must give the resolver back exactly"

    # a crash: the next start finds the saved copy and restores it before anything else
    crashed = start_client(bed, pki, "client1", "--dns-state-dir", state, log="client1-crash")
    wait_for("the name server again", lambda: f"nameserver {HOST}" in own.read_text())
    crashed.stop(signal.SIGKILL)
    assert f"nameserver {HOST}" in own.read_text()
    assert list(Path(state).glob("resolv.conf.*.json")), "no saved copy beside the change"
    again = start_client(
        bed, pki, "client1", "--dns-state-dir", state, "--no-dns", log="client1-again"
    )
    wait_for("the recovery", lambda: "dns_recovered" in again.output() or not again.alive())
    assert own.read_text() == RESOLV_CONF, again.output()
    assert not list(Path(state).glob("resolv.conf.*.json"))


def test_the_client_refuses_a_resolver_file_that_is_the_hosts(
    bed: Testbed, pki: dict[str, Path], tmp_path: Path
) -> None:
    # A file PID 1 sees too, from another network namespace: exactly the host's
    # /etc/resolv.conf as a namespace without /etc/netns/NS/resolv.conf sees it.
    shared = tmp_path / "resolv.conf"
    shared.write_text("nameserver 192.0.2.53\n")
    start_server(bed, server_args(pki, "--dns", HOST))
    client = start_client(bed, pki, "client1", "--resolv-conf", str(shared),
                          "--dns-state-dir", str(tmp_path / "state"))  # fmt: skip
    wait_for("client1 to connect", lambda: connected(bed, bed.clients["client1"]))
    wait_for("the refusal", lambda: "dns_not_applied" in client.output())
    assert "host's resolver" in client.output()
    assert shared.read_text() == "nameserver 192.0.2.53\n"
    assert bed.ping(bed.clients["client1"], HOST), "the tunnel must work without the DNS"


def _config_file(path: Path, routes: list[str], mtu: int = 1400) -> None:
    path.write_text(f"route = {json.dumps(routes)}\nmtu = {mtu}\n")


def test_a_route_pushed_on_reload_reaches_the_client_without_a_reconnect(
    bed: Testbed, pki: dict[str, Path], tmp_path: Path
) -> None:
    settings = tmp_path / "server.toml"
    _config_file(settings, [LAN])
    args = server_args(pki, "--config", str(settings))
    at = args.index("--route")
    del args[at : at + 2]  # from the file, or the flag would win over it
    server = start_server(bed, args)
    start_client(bed, pki, "client1")
    ns = bed.clients["client1"]
    wait_for("client1 to connect", lambda: connected(bed, ns))
    extra = "10.209.0.0/24"
    assert extra not in bed.run(ns, "ip", "route").stdout

    _config_file(settings, [LAN, extra], mtu=1300)
    server.popen.send_signal(signal.SIGHUP)
    wait_for("the new route", lambda: f"{extra} dev vpn0" in bed.run(ns, "ip", "route").stdout)
    status = connected(bed, ns)
    assert status is not None and status["reconnects"] == 0 and status["updates"] == 1
    assert extra in status["routes"]
    wait_for("the mtu named", lambda: "reload_not_live" in server.output())
    assert "settings=mtu" in server.output()

    _config_file(settings, [LAN])
    answer = bed.run(bed.gateway, sys.executable, "-m", "vpn", "reload")
    assert answer.returncode == 0 and "applied route" in answer.stdout, answer
    wait_for("the route gone", lambda: extra not in bed.run(ns, "ip", "route").stdout)
    status = connected(bed, ns)
    assert status is not None and status["reconnects"] == 0 and status["updates"] == 2
    assert bed.ping(ns, HOST), "the LAN route stays"


def test_json_logs_are_one_object_per_line(bed: Testbed, pki: dict[str, Path]) -> None:
    server = start_server(bed, server_args(pki, "--log-format", "json"))
    start_client(bed, pki, "client1", "--log-format", "json")
    wait_for("client1 to connect", lambda: connected(bed, bed.clients["client1"]))
    wait_for("the connect event", lambda: '"event":"connect"' in server.output())
    server.stop(signal.SIGTERM)
    events = [json.loads(line) for line in server.output().splitlines() if line.strip()]
    assert all({"time", "level", "event"} <= set(e) for e in events), events
    connect = next(e for e in events if e["event"] == "connect")
    assert connect["identity"] == "client1" and connect["peer"].startswith("10.201.1.2:")
    assert connect["level"] == "info"
    assert any(e["event"] == "listening" for e in events)
