"""vpn.iface.tun against the real kernel: TUN devices in throwaway namespaces, real packets."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import select
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable

import pytest
from pyroute2 import IPRoute

from vpn.errors import TunError
from vpn.iface import tun_writes, vnet
from vpn.iface.netconf import NetConf
from vpn.iface.tun import (
    IFF_NO_PI,
    IFF_TUN,
    IFF_VNET_HDR,
    TUN_F_CSUM,
    TUN_F_TSO4,
    TUN_F_TSO6,
    Tun,
    open_tun,
    supports_offload,
    tun_features,
)
from vpn.iface.tun_writes import check_packet, write_packet
from vpn.iface.vnet import PLAIN_VNET_HDR, VNET_HDR_LEN, parse_vnet_hdr

PEER = "10.0.8.32"
LOCAL = "10.0.8.99"


def tun_name() -> str:
    return f"vt{secrets.token_hex(3)}"


# -- packets built by hand, checksums included ---------------------------------------------------
def inet_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def icmp_echo(
    src: str,
    dst: str,
    *,
    kind: int = 8,
    ident: int = 0x1234,
    seq: int = 1,
    payload: bytes = b"vpnlab-tun-test!",
    bad_icmp_checksum: bool = False,
) -> bytes:
    """An IPv4 ICMP echo request (kind 8) or reply (kind 0) with correct checksums."""
    icmp = struct.pack("!BBHHH", kind, 0, 0, ident, seq) + payload
    csum = inet_checksum(icmp) ^ (0x5555 if bad_icmp_checksum else 0)
    icmp = icmp[:2] + struct.pack("!H", csum) + icmp[4:]
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45, 0, 20 + len(icmp), 0x4242, 0x4000, 64, 1, 0,
        socket.inet_aton(src), socket.inet_aton(dst),
    )  # fmt: skip
    header = header[:10] + struct.pack("!H", inet_checksum(header)) + header[12:]
    return header + icmp


def ipv4_fields(packet: bytes) -> dict[str, object]:
    ihl = (packet[0] & 0x0F) * 4
    return {
        "version": packet[0] >> 4,
        "proto": packet[9],
        "src": socket.inet_ntoa(packet[12:16]),
        "dst": socket.inet_ntoa(packet[16:20]),
        "header_ok": inet_checksum(packet[:ihl]) == 0,
        "l4": packet[ihl:],
    }


def read_until(fd: int, want: Callable[[bytes], bool], timeout: float = 3.0) -> bytes | None:
    """Read packets from a non-blocking tun fd until one satisfies `want` (or time runs out)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if not poller.poll(left * 1000):
            break
        try:
            packet = os.read(fd, 70000)
        except BlockingIOError:
            continue
        if want(packet):
            return packet
    return None


def is_ipv4(packet: bytes) -> bool:
    return len(packet) >= 20 and packet[0] >> 4 == 4


def configured(tun: Tun, conf: NetConf, cidr: str = f"{LOCAL}/24") -> None:
    conf.disable_ipv6(tun.name)  # no router solicitations among the packets we read
    conf.add_address(tun.name, cidr)
    conf.set_link(tun.name, up=True)


# -- no root needed ------------------------------------------------------------------------------
def test_missing_device_node_says_what_to_do() -> None:
    with pytest.raises(TunError) as caught:
        open_tun("tun%d", path=f"/nonexistent-{secrets.token_hex(4)}/tun")
    assert caught.value.errno == errno.ENOENT
    assert "--device /dev/net/tun" in str(caught.value)
    assert "modprobe tun" in str(caught.value)


def test_name_too_long_is_refused_before_the_kernel() -> None:
    with pytest.raises(TunError) as caught:
        open_tun("a" * 16, path=f"/nonexistent-{secrets.token_hex(4)}")
    assert caught.value.errno == errno.EINVAL
    assert "at most 15" in str(caught.value)


def test_offload_without_vnet_hdr_is_refused() -> None:
    with pytest.raises(ValueError, match="vnet_hdr"):
        open_tun(offload=True)


def test_check_packet_rules() -> None:
    packet = icmp_echo(PEER, LOCAL)
    assert check_packet(packet) is None
    assert check_packet(memoryview(packet)) is None
    assert "zero-length" in (check_packet(b"") or "")
    reason = check_packet(b"\x00\x00" + packet)
    assert reason is not None and "0x00" in reason and "0x4_" in reason and "0x6_" in reason
    assert "zero bytes" in reason
    assert "hex text" in (check_packet(packet.hex(" ").encode()) or "")
    assert check_packet(b"\x60" + bytes(39)) is None  # IPv6 passes the write-time rule
    # vnet_hdr: the header comes first, then the same rule for the packet
    assert check_packet(PLAIN_VNET_HDR + packet, vnet_hdr=True) is None
    assert "10-byte virtio_net_hdr" in (check_packet(packet[:5], vnet_hdr=True) or "")
    assert "gso_type" in (check_packet(b"\0\x09" + bytes(8) + packet, vnet_hdr=True) or "")
    assert "0x4_" in (check_packet(PLAIN_VNET_HDR + bytes(20), vnet_hdr=True) or "")
    # TAP frames are Ethernet: no nibble rule, but a 14-byte minimum
    assert check_packet(bytes(14), tap=True) is None
    assert "14-byte" in (check_packet(bytes(13), tap=True) or "")


def test_parse_vnet_hdr() -> None:
    raw = struct.pack("=BBHHHH", 1, 1, 66, 1448, 34, 16)
    hdr = parse_vnet_hdr(raw + b"rest")
    assert hdr == vnet.VnetHdr(1, 1, 66, 1448, 34, 16)
    assert vnet.pack_vnet_hdr(hdr) == raw
    assert parse_vnet_hdr(PLAIN_VNET_HDR) == (0, 0, 0, 0, 0, 0)
    assert len(PLAIN_VNET_HDR) == VNET_HDR_LEN == 10
    with pytest.raises(ValueError):
        parse_vnet_hdr(b"short")


# -- real devices --------------------------------------------------------------------------------
def real_kernel(test: Callable[..., None]) -> Callable[..., None]:
    """Root, /dev/net/tun, and the test's thread inside a fresh namespace."""
    return pytest.mark.root(pytest.mark.usefixtures("require_tun", "inside_netns")(test))


@real_kernel
def test_features_of_this_kernel() -> None:
    features = tun_features()
    assert features & IFF_TUN and features & IFF_NO_PI
    assert supports_offload() == bool(features & IFF_VNET_HDR)


@real_kernel
def test_open_with_a_name() -> None:
    name = tun_name()
    with open_tun(name) as tun:
        assert tun.name == name
        assert tun.fileno() == tun.fd >= 0
        assert not os.get_blocking(tun.fd)
        assert socket.if_nametoindex(name) > 0
    assert tun.fd == -1
    tun.close()  # idempotent
    with pytest.raises(OSError):
        socket.if_nametoindex(name)  # closing the fd removed the interface


@real_kernel
def test_open_with_a_pattern() -> None:
    with open_tun() as first, open_tun() as second, open_tun("vpn%d") as third:
        assert re.fullmatch(r"tun\d+", first.name), first.name
        assert re.fullmatch(r"tun\d+", second.name), second.name
        assert first.name != second.name
        assert re.fullmatch(r"vpn\d+", third.name), third.name
        for tun in (first, second, third):
            assert socket.if_nametoindex(tun.name) > 0


@real_kernel
def test_mtu_and_address_through_netconf(inside_netns: str, run_in_netns) -> None:
    with open_tun(tun_name()) as tun, NetConf() as conf:
        conf.add_address(tun.name, f"{LOCAL}/24")
        conf.set_link(tun.name, up=True, mtu=1400)
        shown = run_in_netns(inside_netns, ["ip", "-o", "-4", "addr", "show", "dev", tun.name])
        assert f"inet {LOCAL}/24" in shown.stdout, shown
        link = run_in_netns(inside_netns, ["ip", "-o", "link", "show", "dev", tun.name])
        assert "mtu 1400" in link.stdout and ",UP" in link.stdout, link


@real_kernel
def test_ping_is_read_from_the_fd_and_answered() -> None:
    """The classic experiment: ping an address behind the tun, read the request, reply."""
    with open_tun(tun_name()) as tun, NetConf() as conf:
        configured(tun, conf)
        ping = subprocess.Popen(
            ["ping", "-c1", "-W3", PEER], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        try:
            request = read_until(tun.fd, is_ipv4)
            assert request is not None, "no IPv4 packet came out of the tun"
            assert request[0] == 0x45
            fields = ipv4_fields(request)
            assert (fields["src"], fields["dst"], fields["proto"]) == (LOCAL, PEER, 1)
            icmp = fields["l4"]
            assert isinstance(icmp, bytes) and icmp[0] == 8  # echo request
            ident, seq = struct.unpack("!HH", icmp[4:8])
            reply = icmp_echo(PEER, LOCAL, kind=0, ident=ident, seq=seq, payload=icmp[8:])
            write_packet(tun, reply)
            out, _ = ping.communicate(timeout=10)
        finally:
            if ping.poll() is None:
                ping.kill()
                ping.wait()
        assert ping.returncode == 0, out.decode()
        assert "1 received" in out.decode()


@real_kernel
def test_written_echo_request_gets_a_reply_from_the_kernel() -> None:
    with open_tun(tun_name()) as tun, NetConf() as conf:
        configured(tun, conf)
        payload = secrets.token_bytes(24)
        write_packet(tun, icmp_echo(PEER, LOCAL, ident=77, seq=5, payload=payload))
        reply = read_until(tun.fd, lambda p: is_ipv4(p) and p[9] == 1)
        assert reply is not None, "the kernel did not answer the echo request"
        fields = ipv4_fields(reply)
        assert (fields["src"], fields["dst"], fields["header_ok"]) == (LOCAL, PEER, True)
        icmp = fields["l4"]
        assert isinstance(icmp, bytes)
        assert icmp[0] == 0 and struct.unpack("!HH", icmp[4:8]) == (77, 5)
        assert icmp[8:] == payload and inet_checksum(icmp) == 0


@real_kernel
def test_bad_icmp_checksum_is_accepted_by_write_but_never_answered() -> None:
    with open_tun(tun_name()) as tun, NetConf() as conf:
        configured(tun, conf)
        write_packet(tun, icmp_echo(PEER, LOCAL, bad_icmp_checksum=True))  # no error...
        assert read_until(tun.fd, is_ipv4, timeout=0.7) is None  # ...and no reply either
        write_packet(tun, icmp_echo(PEER, LOCAL))
        assert read_until(tun.fd, is_ipv4) is not None  # the same packet, correct: answered


@real_kernel
def test_rejected_writes_are_explained() -> None:
    good = icmp_echo(PEER, LOCAL)
    with open_tun(tun_name()) as tun, NetConf() as conf:
        # interface down → EIO
        with pytest.raises(TunError) as caught:
            write_packet(tun, good)
        assert caught.value.errno == errno.EIO
        assert f"ip link set {tun.name} up" in str(caught.value)
        configured(tun, conf)
        # first nibble 0 → EINVAL, e.g. what `xxd -r` makes of a dump with offsets not from 0
        with pytest.raises(TunError) as caught:
            write_packet(tun, bytes(16) + good)
        assert caught.value.errno == errno.EINVAL
        assert "0x4_" in str(caught.value) and "0x6_" in str(caught.value)
        assert "first byte 0x00" in str(caught.value)
        # the hex text written instead of the bytes
        with pytest.raises(TunError) as caught:
            write_packet(tun, good.hex(" ").encode())
        assert caught.value.errno == errno.EINVAL and "hex text" in str(caught.value)
        # zero-length write
        with pytest.raises(TunError) as caught:
            write_packet(tun, b"")
        assert caught.value.errno == errno.EINVAL and "zero-length" in str(caught.value)
        # the explanation is only the slow path: the raw os.write error is the kernel's own
        with pytest.raises(OSError) as raw:
            os.write(tun.fd, b"\x00" + good[1:])
        assert raw.value.errno == errno.EINVAL
        assert "0x00" in tun_writes.explain_write_error(raw.value, b"\x00" + good[1:], tun=tun)


@real_kernel
def test_fd_without_tunsetiff_is_explained() -> None:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    with Tun(fd, "(none)") as unattached, pytest.raises(TunError) as caught:
        write_packet(unattached, icmp_echo(PEER, LOCAL))
    assert caught.value.errno == errno.EBADFD
    assert "TUNSETIFF" in str(caught.value)


@real_kernel
def test_name_taken_by_another_kind_of_link() -> None:
    name = tun_name()
    with IPRoute() as ipr:
        ipr.link("add", ifname=name, kind="bridge")
        try:
            with pytest.raises(TunError) as caught:
                open_tun(name)
        finally:
            ipr.link("del", index=ipr.link_lookup(ifname=name)[0])
    assert caught.value.errno == errno.EINVAL
    message = str(caught.value)
    assert f"interface {name} already exists and is not a free tun device" in message
    assert "pick another --tun name" in message


@real_kernel
def test_name_held_by_another_fd() -> None:
    with open_tun(tun_name()) as first:
        with pytest.raises(TunError) as caught:
            open_tun(first.name)
        assert caught.value.errno == errno.EBUSY
        assert f"interface {first.name} already exists" in str(caught.value)
        # a tun is not a tap: the same name asked for as a tap is refused too
        with pytest.raises(TunError) as caught:
            open_tun(first.name, tap=True)
        assert "not a free tap device" in str(caught.value)


@real_kernel
def test_multi_queue_gives_several_fds_on_one_device() -> None:
    name = tun_name()
    with open_tun(name, multi_queue=True) as q0, open_tun(name, multi_queue=True) as q1:
        assert q0.name == q1.name == name and q0.fd != q1.fd


@real_kernel
def test_tap_frame_rules() -> None:
    with open_tun(tap=True) as tap, NetConf() as conf:
        assert re.fullmatch(r"tap\d+", tap.name) and tap.tap
        conf.set_link(tap.name, up=True)
        with pytest.raises(TunError) as caught:
            write_packet(tap, bytes(13))
        assert "14-byte Ethernet header" in str(caught.value)
        write_packet(tap, b"\xff" * 6 + b"\x02" + bytes(5) + b"\x88\xb5" + bytes(46))


@real_kernel
def test_vnet_hdr_with_offload_reads_header_then_packet() -> None:
    with open_tun(tun_name(), vnet_hdr=True, offload=True) as tun, NetConf() as conf:
        assert tun.vnet_hdr
        assert tun.offload & TUN_F_CSUM and tun.offload & TUN_F_TSO4 and tun.offload & TUN_F_TSO6
        configured(tun, conf)
        # a plain packet written with an all-zero header is taken like any other
        write_packet(tun, PLAIN_VNET_HDR + icmp_echo(PEER, LOCAL, ident=9, seq=9))
        reply = read_until(tun.fd, lambda p: len(p) > VNET_HDR_LEN and is_ipv4(p[VNET_HDR_LEN:]))
        assert reply is not None, "no reply read from the vnet_hdr tun"
        hdr = parse_vnet_hdr(reply)
        assert hdr.gso_type == 0  # a small ICMP reply is never segmented
        fields = ipv4_fields(reply[VNET_HDR_LEN:])
        assert (fields["src"], fields["dst"], fields["proto"]) == (LOCAL, PEER, 1)
        # a write without the header is refused and explained
        with pytest.raises(TunError) as caught:
            write_packet(tun, b"\x45" + bytes(5))
        assert "virtio_net_hdr" in str(caught.value)


def _copy(a: Tun, b: Tun, stop: threading.Event, sizes: list[int]) -> None:
    """Carry everything between two tuns unchanged: virtio_net_hdr and GSO super-packet."""
    poller = select.poll()
    poller.register(a.fd, select.POLLIN)
    poller.register(b.fd, select.POLLIN)
    other = {a.fd: b.fd, b.fd: a.fd}
    while not stop.is_set():
        for fd, _ in poller.poll(100):
            while True:
                try:
                    data = os.read(fd, 65536 + VNET_HDR_LEN)
                except (BlockingIOError, OSError):
                    break
                sizes.append(len(data))
                with contextlib.suppress(OSError):  # e.g. the far end went down meanwhile
                    os.write(other[fd], data)


@real_kernel
def test_tcp_through_two_offloaded_tuns_carries_super_packets(netns: str, call_in_netns) -> None:
    """TCP between two namespaces over tun ⇄ copier ⇄ tun: data intact, reads beyond MTU."""
    near_addr, far_addr, port = "10.0.9.1", "10.0.9.2", 5201

    def far_side() -> tuple[Tun, socket.socket]:
        far_tun = open_tun(tun_name(), vnet_hdr=True, offload=True)
        try:
            with IPRoute() as ipr:
                index = ipr.link_lookup(ifname=far_tun.name)[0]
                ipr.addr("add", index=index, address=far_addr, prefixlen=24)
                ipr.link("set", index=index, state="up")
            return far_tun, socket.create_server((far_addr, port))
        except BaseException:
            far_tun.close()
            raise

    data = secrets.token_bytes(4 << 20)
    received = bytearray()
    sizes: list[int] = []
    stop = threading.Event()

    def serve(listener: socket.socket) -> None:
        listener.settimeout(10)
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(10)
            while chunk := conn.recv(1 << 16):
                received.extend(chunk)

    far_tun, listener = call_in_netns(netns, far_side)
    near = open_tun(tun_name(), vnet_hdr=True, offload=True)
    with far_tun, listener, near as near_tun, NetConf() as conf:
        configured(near_tun, conf, f"{near_addr}/24")
        copier = threading.Thread(target=_copy, args=(near_tun, far_tun, stop, sizes))
        server = threading.Thread(target=serve, args=(listener,))
        copier.start()
        server.start()
        try:
            with socket.create_connection((far_addr, port), timeout=10) as client:
                client.sendall(data)
            server.join(timeout=20)
        finally:
            stop.set()
            copier.join(timeout=5)
            server.join(timeout=5)
    assert bytes(received) == data, f"got {len(received)} of {len(data)} bytes"
    assert max(sizes) > 1500 + VNET_HDR_LEN, f"largest read {max(sizes)}: no GSO super-packets"
