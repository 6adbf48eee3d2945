"""vpn.iface.netconf on the real kernel, in a throwaway namespace.

`ip` is the independent witness.
"""

from __future__ import annotations

import errno
import json
import logging
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from vpn.errors import NetConfError
from vpn.iface.netconf import NetConf
from vpn.iface.tun import Tun, open_tun

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("require_tun", "inside_netns")]


@pytest.fixture
def tun() -> Iterator[Tun]:
    with open_tun(f"vt{secrets.token_hex(3)}") as device:
        yield device


@pytest.fixture
def state(inside_netns: str, run_in_netns: Callable[..., Any], tun: Tun) -> Callable[[], dict]:
    """What `ip` and /proc/sys show of this namespace's network now."""

    def ip_json(*argv: str) -> Any:
        done = run_in_netns(inside_netns, ["ip", "-j", *argv], check=True)
        return json.loads(done.stdout or "[]")

    def sysctl(path: str) -> str:
        done = run_in_netns(inside_netns, ["cat", f"/proc/sys/{path}"], check=True)
        return done.stdout.strip()

    def snapshot() -> dict:
        link = ip_json("link", "show", "dev", tun.name)[0]
        return {
            "routes4": ip_json("-4", "route", "show", "table", "all"),
            "routes6": ip_json("-6", "route", "show", "table", "all"),
            # without "qdisc": the kernel attaches the default one on first up, for good
            "addresses": [
                {k: v for k, v in link.items() if k != "qdisc"} for link in ip_json("addr", "show")
            ],
            "link": (link["mtu"], sorted(link["flags"]), link["operstate"]),
            "ip_forward": sysctl("net/ipv4/ip_forward"),
            "rp_filter": sysctl("net/ipv4/conf/all/rp_filter"),
            "disable_ipv6": sysctl(f"net/ipv6/conf/{tun.name}/disable_ipv6"),
        }

    return snapshot


def apply_everything(conf: NetConf, tun: Tun) -> None:
    conf.set_link(tun.name, up=True, mtu=1400)
    conf.disable_ipv6(tun.name)
    conf.add_address(tun.name, "10.0.8.99/24")
    conf.add_route("10.0.20.0/24", dev=tun.name)
    conf.add_route("10.0.21.0/24", via="10.0.8.1", metric=5)
    conf.add_route("default", dev=tun.name, metric=900)
    conf.set_ipv4_forwarding(not conf.ipv4_forwarding())
    conf.set_sysctl("net.ipv4.conf.all.rp_filter", 2)


def assert_applied(now: dict, tun: Tun) -> None:
    routes = {(r["dst"], r.get("dev"), r.get("gateway")) for r in now["routes4"]}
    assert ("10.0.20.0/24", tun.name, None) in routes
    assert ("10.0.21.0/24", tun.name, "10.0.8.1") in routes
    assert ("default", tun.name, None) in routes
    assert now["link"][0] == 1400 and "UP" in now["link"][1]
    assert (now["rp_filter"], now["disable_ipv6"]) == ("2", "1")
    addresses = {
        (a["ifname"], i["local"], i["prefixlen"]) for a in now["addresses"] for i in a["addr_info"]
    }
    assert (tun.name, "10.0.8.99", 24) in addresses


def test_everything_is_undone_on_close(tun: Tun, state: Callable[[], dict]) -> None:
    before = state()
    assert "UP" not in before["link"][1]
    conf = NetConf()
    with conf:
        apply_everything(conf, tun)
        assert len(conf.pending()) == 8
        applied = state()
        assert_applied(applied, tun)
        assert applied["ip_forward"] != before["ip_forward"]
    assert state() == before
    conf.close()  # idempotent
    assert state() == before


def test_everything_is_undone_after_an_error(tun: Tun, state: Callable[[], dict]) -> None:
    before = state()
    with pytest.raises(RuntimeError, match="boom"), NetConf() as conf:
        apply_everything(conf, tun)
        assert_applied(state(), tun)
        raise RuntimeError("boom")
    assert state() == before


def test_failed_step_leaves_nothing_behind(tun: Tun, state: Callable[[], dict]) -> None:
    before = state()
    with pytest.raises(NetConfError) as caught, NetConf() as conf:
        conf.set_link(tun.name, up=True)
        conf.add_address(tun.name, "10.0.8.99/24")
        conf.add_route("10.0.22.0/24", via="192.0.2.1")  # no subnet of ours holds that gateway
    assert caught.value.code == errno.ENETUNREACH
    assert "add an address on its subnet" in str(caught.value)
    assert state() == before


def test_existing_route_is_refused_with_advice(tun: Tun) -> None:
    with NetConf() as conf:
        conf.set_link(tun.name, up=True)
        conf.add_route("10.0.30.0/24", dev=tun.name)
        with pytest.raises(NetConfError) as caught:
            conf.add_route("10.0.30.0/24", dev=tun.name)
        message = str(caught.value)
        assert caught.value.code == errno.EEXIST
        assert f"route to 10.0.30.0/24 already exists (dev {tun.name})" in message
        assert "replace=True" in message and "ip route del 10.0.30.0/24" in message


def test_replace_takes_a_route_over_and_gives_it_back(
    tun: Tun, state: Callable[[], dict], inside_netns: str
) -> None:
    with open_tun(f"vt{secrets.token_hex(3)}") as other, NetConf() as outer:
        outer.set_link(tun.name, up=True)
        outer.set_link(other.name, up=True)
        outer.add_route("10.0.31.0/24", dev=tun.name)
        before = state()
        with NetConf() as inner:
            inner.add_route("10.0.31.0/24", dev=other.name, replace=True)
            assert inner.route_get("10.0.31.9")["ifname"] == other.name
        assert state() == before
        assert outer.route_get("10.0.31.9")["ifname"] == tun.name


def test_route_get_picks_the_tun(tun: Tun) -> None:
    with NetConf() as conf:
        conf.set_link(tun.name, up=True)
        conf.add_address(tun.name, "10.0.8.99/24")
        conf.add_route("10.0.40.0/24", dev=tun.name)
        conf.add_route("10.0.41.0/24", via="10.0.8.1")
        assert conf.route_get("10.0.40.7") == {
            "ifname": tun.name,
            "gateway": None,
            "src": "10.0.8.99",
        }
        assert conf.route_get("10.0.41.7") == {
            "ifname": tun.name,
            "gateway": "10.0.8.1",
            "src": "10.0.8.99",
        }
        with pytest.raises(NetConfError, match=r"no route to 10\.0\.99\.1"):
            conf.route_get("10.0.99.1")


def test_address_already_there_is_used_and_left_in_place(
    tun: Tun, inside_netns: str, run_in_netns: Callable[..., Any]
) -> None:
    run_in_netns(inside_netns, ["ip", "addr", "add", "10.0.8.99/24", "dev", tun.name], check=True)
    with NetConf() as conf:
        conf.add_address(tun.name, "10.0.8.99/24")
        conf.add_address(tun.name, "10.0.8.98/24")
        assert any("10.0.8.99/24 was already on" in note for note in conf.notes)
    shown = run_in_netns(inside_netns, ["ip", "-o", "-4", "addr", "show", "dev", tun.name])
    assert "10.0.8.99/24" in shown.stdout and "10.0.8.98" not in shown.stdout


def test_undo_of_what_is_gone_is_quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="vpn.netconf")
    device = open_tun(f"vt{secrets.token_hex(3)}")
    conf = NetConf()
    try:
        conf.set_link(device.name, up=True)
        conf.disable_ipv6(device.name)
        conf.add_address(device.name, "10.0.8.99/24")
        conf.add_route("10.0.50.0/24", dev=device.name)
    finally:
        device.close()  # the interface vanishes, and with it everything on it
    conf.close()  # must not raise
    conf.close()
    gone = [r for r in caplog.records if "already gone" in r.getMessage()]
    assert len(gone) == 4, [r.getMessage() for r in caplog.records]


def test_del_route(tun: Tun, state: Callable[[], dict]) -> None:
    with NetConf() as outer:
        outer.set_link(tun.name, up=True)
        outer.add_route("10.0.60.0/24", dev=tun.name)
        before = state()
        with NetConf() as inner:
            inner.add_route("10.0.61.0/24", dev=tun.name)
            inner.del_route("10.0.61.0/24")  # its own: simply gone, nothing to undo
            inner.del_route("10.0.60.0/24")  # someone else's: put back on close
            assert inner.pending() == [f"put back route 10.0.60.0/24 dev {tun.name}"]
            routes = {r["dst"] for r in state()["routes4"]}
            assert "10.0.60.0/24" not in routes and "10.0.61.0/24" not in routes
            with pytest.raises(NetConfError, match=r"no route to 10\.0\.62\.0/24"):
                inner.del_route("10.0.62.0/24")
        assert state() == before


def test_forwarding_switch_and_sysctl_errors() -> None:
    with NetConf() as conf:
        was = conf.ipv4_forwarding()
        conf.set_ipv4_forwarding(not was)
        assert conf.ipv4_forwarding() is (not was)
        conf.set_ipv4_forwarding(not was)  # no change: nothing more to undo
        assert len(conf.pending()) == 1
        with pytest.raises(NetConfError, match=r"net\.ipv4\.no_such_knob does not exist"):
            conf.set_sysctl("net.ipv4.no_such_knob", 1)
    with NetConf() as conf:
        assert conf.ipv4_forwarding() is was
        assert conf.disable_ipv6("no-such-if") is False


def test_clear_errors_for_bad_input(tun: Tun) -> None:
    with NetConf() as conf:
        with pytest.raises(NetConfError, match="interface nosuchif0 does not exist"):
            conf.link_index("nosuchif0")
        with pytest.raises(NetConfError, match=r"did you mean 10\.0\.8\.0/24"):
            conf.add_route("10.0.8.5/24", dev=tun.name)
        with pytest.raises(NetConfError, match=r"like 10\.0\.8\.99/24"):
            conf.add_address(tun.name, "10.0.8.999/24")
        with pytest.raises(NetConfError, match=r"\(dev=\) or a gateway \(via=\)"):
            conf.add_route("10.0.70.0/24")
        with pytest.raises(NetConfError, match="MTU 20 on"):
            conf.set_link(tun.name, mtu=20)
        assert conf.pending() == []
    with pytest.raises(NetConfError, match="closed"):
        conf.add_route("10.0.71.0/24", dev=tun.name)


def test_changes_are_undone_newest_first(tun: Tun, state: Callable[[], dict]) -> None:
    """The undo order is the reverse of the order of the changes: the sysctl set last goes
    first, the link set up first goes last (a route's undo before its address's)."""
    before = state()
    conf = NetConf()
    with conf:
        apply_everything(conf, tun)
        pending = conf.pending()
        assert "rp_filter" in pending[0], pending
        assert "forward" in pending[1], pending
        assert pending[-1].startswith(f"restore {tun.name}"), pending
        routes = [i for i, what in enumerate(pending) if "route" in what]
        address = next(i for i, what in enumerate(pending) if "address" in what)
        assert routes and max(routes) < address, pending
        routes_in_order = [what.split()[2] for what in pending if "route" in what]
        assert routes_in_order == ["0.0.0.0/0", "10.0.21.0/24", "10.0.20.0/24"], pending
    assert state() == before
