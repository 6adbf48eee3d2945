"""The lab note's TUN experiments, step by step, on the client node: read a ping from the fd,
write a crafted packet and read the kernel's answer, then the classic failing write — which
bytes give "Invalid argument", which do not, and what the project says about each. Then the
same for IPv6: a ping -6 read (first nibble 6), an ICMPv6 echo request written with the
checksum over the IPv6 pseudo-header (and without it: dropped and counted), the nibbles.

The experiments run in one program on the node (HELPER, with the node's own `vpn` package) and
report JSON; each step here asserts on one experiment and shows its bytes.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from scenarios.lab_checks import run_json
from scenarios.runner import Context, Result, Scenario
from scenarios.tunnel import nodes_with_role
from vpn import packets

# The lab note's addresses: a network that exists only on the node's TUN device.
TUN_ADDRESS = "10.0.8.99/24"
PEER = "10.0.8.32"
PI_ADDRESS = "10.0.9.99/24"  # a second TUN, opened without IFF_NO_PI
PI_PEER = "10.0.9.32"
IPV6_DEFAULTS = {"disable_ipv6": "0", "addr_gen_mode": "1", "accept_ra": "0"}
# The same for IPv6: a ULA prefix that exists only on the TUN devices.
TUN_ADDRESS6 = "fd00:8::99/64"
PEER6 = "fd00:8::32"
PI_ADDRESS6 = "fd00:9::99/64"
PI_PEER6 = "fd00:9::32"

HELPER = r'''
"""TUN experiments on this node; prints one JSON object."""
import errno, fcntl, ipaddress, json, os, select, shutil, socket, struct, subprocess, sys
import tempfile, time

from vpn import packets
from vpn.errors import NetConfError
from vpn.iface import tun, tun_writes
from vpn.iface.netconf import NetConf

ADDRESS, PEER, PI_ADDRESS, PI_PEER = sys.argv[1:5]
OWN, PI_OWN = ADDRESS.split("/")[0], PI_ADDRESS.split("/")[0]
ADDRESS6, PEER6, PI_ADDRESS6, PI_PEER6 = (sys.argv[5:9] + [""] * 4)[:4]  # "": no IPv6 part
OWN6, PI_OWN6 = ADDRESS6.split("/")[0], PI_ADDRESS6.split("/")[0]
IDENT = 0x7A7A
XXD = shutil.which("xxd")


def request(seq, own=OWN, peer=PEER):
    return packets.icmp_echo(peer, own, ident=IDENT, seq=seq, data=b"vpnlab tun-io")


def read_until(fd, match, timeout, skip=0):
    """The first packet read that match() accepts (or None), and the heads of the others."""
    others, deadline = [], time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([fd], [], [], left)[0]:
            break
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            continue
        if match(data[skip:]):
            return data, others
        others.append(data[:24].hex())
    return None, others


def is_reply(seq, own, peer):
    want = socket.inet_aton(own) + socket.inet_aton(peer)
    return lambda p: (
        len(p) >= 28 and p[0] == 0x45 and p[9] == 1 and p[12:20] == want and p[20] == 0
        and struct.unpack("!HH", p[24:28]) == (IDENT, seq)
    )


def request6(seq, own=None, peer=None, csum=None):
    """An ICMPv6 echo request peer → own; csum: a checksum put in place of the right one."""
    packet = packets.icmpv6_echo(peer or PEER6, own or OWN6, ident=IDENT, seq=seq,
                                 data=b"vpnlab tun-io")
    if csum is None:
        return packet
    return packet[:42] + struct.pack("!H", csum) + packet[44:]


def is_reply6(seq, own, peer):
    want = socket.inet_pton(socket.AF_INET6, own) + socket.inet_pton(socket.AF_INET6, peer)
    return lambda p: (
        len(p) >= 48 and p[0] >> 4 == 6 and p[6] == packets.IPPROTO_ICMPV6 and p[8:40] == want
        and p[40] == packets.ICMPV6_ECHO_REPLY and struct.unpack("!HH", p[44:48]) == (IDENT, seq)
    )


def checksum_ok6(packet):
    """Whether an IPv6 packet's ICMPv6 checksum is right: zero over the pseudo-header."""
    src = socket.inet_ntop(socket.AF_INET6, packet[8:24])
    dst = socket.inet_ntop(socket.AF_INET6, packet[24:40])
    (length,) = struct.unpack("!H", packet[4:6])
    return packets.checksum6(src, dst, packets.IPPROTO_ICMPV6, packet[40 : 40 + length]) == 0


def counters(path, names):
    """Named kernel counters of this namespace: /proc/net/snmp6 (name value) or snmp (Ip …)."""
    found = {}
    with open(path) as fh:
        lines = fh.read().splitlines()
    if path.endswith("snmp6"):
        found = {k: int(v) for k, v in (line.split() for line in lines if line.strip())}
    else:
        for keys, values in zip(lines[::2], lines[1::2]):
            group = keys.split(":")[0]
            for k, v in zip(keys.split()[1:], values.split()[1:]):
                found[group + k] = int(v)
    return {name: found.get(name) for name in names}


def attempt(dev, data, seq, own=OWN, peer=PEER, skip=0, six=False):
    """Write data into the fd; if the kernel took it, wait for its echo reply."""
    result = {"head": data[:32].hex(), "tail": data[-4:].hex(), "size": len(data),
              "check_packet": tun_writes.check_packet(data)}
    try:
        result["written"] = os.write(dev.fd, data)
    except OSError as err:
        result["errno"] = errno.errorcode[err.errno]
        result["explained"] = tun_writes.explain_write_error(err, data, tun=dev)
        return result
    match = is_reply6(seq, own, peer) if six else is_reply(seq, own, peer)
    reply, _ = read_until(dev.fd, match, 1.0, skip)
    result["reply"] = reply.hex() if reply else None
    if reply and six:
        result["reply_checksum_ok"] = checksum_ok6(reply[skip:])
    return result


def attempt6(dev, data, seq, own=None, peer=None, skip=0):
    return attempt(dev, data, seq, own or OWN6, peer or PEER6, skip, six=True)


def ipv6_experiments(net, dev, out):
    """The IPv6 side of tun0: read a ping -6, write echo requests with right and wrong
    checksums and first nibbles, and what the kernel counted for each."""
    route = net.route_get(PEER6)
    ping = subprocess.Popen(["ping", "-6", "-n", "-c", "1", "-W", "1", PEER6],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peer6 = socket.inet_pton(socket.AF_INET6, PEER6)
    packet, others = read_until(dev.fd, lambda p: p[0] >> 4 == 6 and p[24:40] == peer6, 3.0)
    ping.terminate()
    ping.wait()
    out["read6"] = {
        "bytes": packet.hex() if packet else None, "others": others, "route_get": route,
        "checksum_ok": checksum_ok6(packet) if packet else None,
    }
    out["write6"] = attempt6(dev, request6(21), 21)
    csum_errors = ["Icmp6InErrors", "Icmp6InCsumErrors"]
    body = request6(22)[40:]
    no_pseudo = packets.checksum(body[:2] + b"\0\0" + body[4:])  # as ICMPv4 computes it
    before = counters("/proc/net/snmp6", csum_errors)
    case = attempt6(dev, request6(22, csum=no_pseudo), 22)
    case["checksum"] = f"{no_pseudo:04x}"
    case["right_checksum"] = request6(22)[42:44].hex()
    case["counters"] = [before, counters("/proc/net/snmp6", csum_errors)]
    out["checksum_no_pseudo6"] = case
    nibbles = {}
    for nibble in range(16):
        data = bytes([nibble << 4 | (request6(23)[0] & 0x0F)]) + request6(23)[1:]
        nibbles[f"{nibble:x}"] = attempt6(dev, data, 23).get("errno", "accepted")
    out["nibbles6"] = nibbles
    hdr_errors = ["IpInHdrErrors", "IpInCsumErrors", "IpInReceives"]
    before = counters("/proc/net/snmp", hdr_errors)
    case = attempt6(dev, b"\x46" + request6(24)[1:], 24)  # an IPv6 packet, version nibble 4
    case["counters"] = [before, counters("/proc/net/snmp", hdr_errors)]
    out["nibble4_6"] = case
    out["bad_nibble6"] = attempt6(dev, b"\x56" + request6(25)[1:], 25)


def dump(data, offset=0):
    """`xxd` of data (xxd -o offset: lines cut from a longer capture)."""
    if XXD:
        argv = [XXD, "-o", str(offset)]
        return subprocess.run(argv, input=data, capture_output=True, check=True).stdout.decode()
    lines = []
    for at in range(0, len(data), 16):
        chunk = data[at : at + 16]
        hexes = " ".join(chunk[i : i + 2].hex() for i in range(0, len(chunk), 2))
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{offset + at:08x}: {hexes:<39}  {text}")
    return "\n".join(lines) + "\n"


def emulated_reverse(text):
    """`xxd -r hexfile > packetfile`: each line's first field is its offset into the file."""
    out = bytearray()
    for line in text.splitlines():
        fields = line.split("  ")[0]
        sep = ":" if ":" in fields else " "
        address, _, data = fields.strip().partition(sep)
        if not address:
            continue
        at, chunk = int(address, 16), bytes.fromhex(data.replace(" ", ""))
        out.extend(bytes(max(0, at - len(out))))
        out[at : at + len(chunk)] = chunk
    return bytes(out)


def reverse(text):
    """The packet file `xxd -r` makes from text: the real xxd when the node has it."""
    emulated = emulated_reverse(text)
    if not XXD:
        return emulated, "emulated xxd -r (no xxd on this node)"
    with tempfile.TemporaryDirectory() as tmp:
        hexfile, packetfile = os.path.join(tmp, "hexfile"), os.path.join(tmp, "packetfile")
        with open(hexfile, "w") as fh:
            fh.write(text)
        subprocess.run(f"{XXD} -r {hexfile} > {packetfile}", shell=True, check=True)
        with open(packetfile, "rb") as fh:
            real = fh.read()
    same = "the emulation agrees" if real == emulated else "THE EMULATION DIFFERS"
    return real, f"real xxd -r ({same})"


def xxd_case(dev, text, seq):
    packet, tool = reverse(text)
    return {"hexfile": text.splitlines()[0], "tool": tool, **attempt(dev, packet, seq)}


def main():
    out = {}
    with NetConf() as net:
        with tun.open_tun("tun0") as dev:
            if ADDRESS6:
                net.enable_ipv6(dev.name)  # no link-local address, no router solicitation
                net.add_address(dev.name, ADDRESS6, nodad=True)
            net.add_address(dev.name, ADDRESS)
            net.set_link(dev.name, up=True)
            try:
                net.add_route(str(ipaddress.ip_interface(ADDRESS).network), dev=dev.name)
                route = "added"
            except NetConfError as err:
                if err.code != errno.EEXIST:
                    raise
                route = str(err)
            out["setup"] = {"tun": dev.name, "route": route, "route_get": net.route_get(PEER)}

            ping = subprocess.Popen(["ping", "-n", "-c", "1", "-W", "1", PEER],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            packet, others = read_until(
                dev.fd, lambda p: p[16:20] == socket.inet_aton(PEER), 3.0)
            ping.terminate()
            ping.wait()
            out["read"] = {
                "bytes": packet.hex() if packet else None, "others": others,
                "summary": str(packets.summarize(packet)) if packet else None,
            }
            out["write"] = attempt(dev, request(1), 1)
            nibbles = {}
            for nibble in range(16):
                data = bytes([nibble << 4 | 5]) + request(2)[1:]
                nibbles[f"{nibble:x}"] = attempt(dev, data, 2).get("errno", "accepted")
            out["nibbles"] = nibbles
            out["bad_nibble"] = attempt(dev, b"\x55" + request(3)[1:], 3)

            hexfile = dump(request(4))
            no_offsets = "".join(line[10:49] + "\n" for line in hexfile.splitlines())
            out["xxd_no_offsets"] = xxd_case(dev, no_offsets, 4)
            out["xxd_offset_40"] = xxd_case(dev, dump(request(5), offset=0x40), 5)
            out["hex_text"] = attempt(dev, dump(request(6)).encode(), 6)
            out["xxd_good"] = xxd_case(dev, dump(request(7)), 7)
            out["trailing_newline"] = attempt(dev, request(8) + b"\n", 8)
            if ADDRESS6:
                ipv6_experiments(net, dev, out)

        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
        fcntl.ioctl(fd, tun.TUNSETIFF, struct.pack("16sH22x", b"tun1", tun.IFF_TUN))
        with tun.Tun(fd, "tun1") as pi:
            if PI_ADDRESS6:
                net.enable_ipv6(pi.name)
                net.add_address(pi.name, PI_ADDRESS6, nodad=True)
            net.add_address(pi.name, PI_ADDRESS)
            net.set_link(pi.name, up=True)
            stats = f"/sys/class/net/{pi.name}/statistics/rx_dropped"
            before = int(open(stats).read())
            bare = attempt(pi, request(9, PI_OWN, PI_PEER), 9, PI_OWN, PI_PEER, skip=4)
            bare["rx_dropped"] = [before, int(open(stats).read())]
            header = b"\x00\x00\x08\x00"
            framed = attempt(pi, header + request(10, PI_OWN, PI_PEER), 10, PI_OWN, PI_PEER, 4)
            out["no_pi"] = {"bare": bare, "with_header": framed}
            if PI_ADDRESS6:
                before = int(open(stats).read())
                bare6 = attempt6(pi, request6(26, PI_OWN6, PI_PEER6), 26, PI_OWN6, PI_PEER6, 4)
                bare6["rx_dropped"] = [before, int(open(stats).read())]
                header6 = b"\x00\x00\x86\xdd"  # flags, then the EtherType of IPv6
                framed6 = attempt6(pi, header6 + request6(27, PI_OWN6, PI_PEER6), 27, PI_OWN6,
                                   PI_PEER6, 4)
                out["no_pi6"] = {"bare": bare6, "with_header": framed6}
    print(json.dumps(out))


main()
'''


def _spaced(hexes: str, count: int = 20) -> str:
    return " ".join(hexes[i : i + 2] for i in range(0, min(len(hexes), 2 * count), 2))


def _refused(case: dict[str, Any], what: str) -> str:
    assert case.get("errno") == "EINVAL", f"{what}: expected EINVAL, got {case}"
    assert case["explained"], f"{what}: the project gave no explanation"
    return f"{case['size']} bytes starting {_spaced(case['head'], 8)} → EINVAL: {case['explained']}"


def _answered(case: dict[str, Any], what: str) -> str:
    assert "written" in case, f"{what}: write refused: {case}"
    assert case["written"] == case["size"], f"{what}: short write {case}"
    assert case["reply"], f"{what}: written, but no echo reply came back"
    return f"wrote {case['size']} bytes, read the reply {_spaced(case['reply'])} …"


def run(ctx: Context) -> None:
    client = nodes_with_role(ctx.backend, "client")[0].name
    with ctx.step(f"the experiments ran on {client}") as step:
        # IPv6 on the TUN devices the program makes: what they inherit from `default`, set from
        # outside the node (a container's /proc/sys is read-only), so that NetConf.enable_ipv6
        # finds them right already — IPv6 on, no link-local address, no router advertisements.
        for key, value in IPV6_DEFAULTS.items():
            ctx.backend.set_sysctl(client, f"net.ipv6.conf.default.{key}", value)
        out = run_json(ctx.backend, client, "tun-io", HELPER, TUN_ADDRESS, PEER, PI_ADDRESS,
                       PI_PEER, TUN_ADDRESS6, PEER6, PI_ADDRESS6, PI_PEER6, timeout=90)  # fmt: skip
        step.detail = f"{len(out)} experiments, JSON from the node"

    with ctx.step(f"tun0 (IFF_TUN|IFF_NO_PI) has {TUN_ADDRESS}; {PEER} is routed to it") as step:
        setup = out["setup"]
        assert setup["route_get"].get("ifname") == setup["tun"], setup
        route = setup["route_get"]
        step.detail = (
            f"route get {PEER}: dev {route['ifname']} src {route['src']}; adding 10.0.8.0/24 "
            f"dev tun0: {setup['route']} (the address's own prefix route)"
        )

    with ctx.step(f"ping {PEER}: its echo request is read from the fd") as step:
        read = out["read"]
        assert read["bytes"], f"nothing for {PEER} read within 3 s (others: {read['others']})"
        packet = bytes.fromhex(read["bytes"])
        source = ipaddress.ip_interface(TUN_ADDRESS).ip.packed.hex()  # 0a000863
        destination = ipaddress.ip_address(PEER).packed.hex()  # 0a000820
        assert packet[0] == 0x45, f"first byte 0x{packet[0]:02x}, expected 0x45"
        assert packet[12:16].hex() == source, f"source {packet[12:16].hex()}, not {source}"
        assert packet[16:20].hex() == destination, f"destination {packet[16:20].hex()}"
        step.detail = (
            f"{_spaced(read['bytes'])} — 0x45 first, source {source}, destination "
            f"{destination} ({read['summary']})"
        )
        ctx.metric("read_first_byte", f"0x{packet[0]:02x}")

    with ctx.step(f"a crafted echo request {PEER} → 10.0.8.99 written in: the kernel answers") as s:
        s.detail = _answered(out["write"], "crafted request")

    with ctx.step("write() checks only the first nibble: 4 or 6, else EINVAL") as step:
        accepted = sorted(n for n, r in out["nibbles"].items() if r == "accepted")
        others = {r for n, r in out["nibbles"].items() if n not in accepted}
        assert accepted == ["4", "6"] and others == {"EINVAL"}, out["nibbles"]
        step.detail = f"accepted {accepted}, the 14 others EINVAL; " + _refused(
            out["bad_nibble"], "first byte 0x55"
        )

    with ctx.step("a hex dump without its offsets, through xxd -r: EINVAL") as step:
        case = out["xxd_no_offsets"]
        assert "DIFFERS" not in case["tool"], case["tool"]
        step.detail = (
            f"hexfile '{case['hexfile'].strip()}' → the first group read as an offset "
            f"({case['tool']}): " + _refused(case, "no offsets")
        )
    with ctx.step("a hex dump whose offsets start at 0x40 (cut from a capture): EINVAL") as step:
        case = out["xxd_offset_40"]
        assert case["head"].startswith("00" * 16), case
        step.detail = f"xxd -r pads with zeros up to 0x40 ({case['tool']}): " + _refused(
            case, "offset 0x40"
        )
    with ctx.step("the hex text itself written instead of the bytes: EINVAL") as step:
        step.detail = _refused(out["hex_text"], "hex text")
        assert "hex text" in step.detail, out["hex_text"]
    with ctx.step("the whole dump, offsets from 0, through xxd -r: accepted and answered") as step:
        step.detail = f"{out['xxd_good']['tool']}: " + _answered(out["xxd_good"], "good dump")
    with ctx.step("a trailing newline does NOT cause it: accepted and answered") as step:
        case = out["trailing_newline"]
        assert case["tail"].endswith("0a") and case["size"] == out["write"]["size"] + 1, case
        step.detail = (
            f"{case['size'] - 1}-byte packet + 0a: {_answered(case, 'trailing newline')}; "
            "bytes after the IP total length are ignored"
        )

    with ctx.step("no IFF_NO_PI: a bare packet is silently lost; 00 00 08 00 first: answered") as s:
        bare, framed = out["no_pi"]["bare"], out["no_pi"]["with_header"]
        assert "written" in bare and bare["written"] == bare["size"], bare
        assert bare["reply"] is None, f"a bare packet was answered on a PI tun: {bare}"
        assert framed["reply"] and framed["reply"].startswith("00000800"), framed
        dropped = bare["rx_dropped"]
        s.detail = (
            f"bare: write() returned {bare['written']}, no reply, rx_dropped {dropped[0]}→"
            f"{dropped[1]} (check_packet: {bare['check_packet']!r} — it assumes IFF_NO_PI, as "
            f"open_tun always sets it); framed: reply read as {_spaced(framed['reply'], 8)} …"
        )
    ipv6_steps(ctx, out)
    causes = ("bad_nibble", "xxd_no_offsets", "xxd_offset_40", "hex_text")
    ctx.metric("einval_causes", sum(out[c].get("errno") == "EINVAL" for c in causes))
    ctx.metric("accepted_nibbles", accepted)


def ipv6_steps(ctx: Context, out: dict[str, Any]) -> None:
    """The same story for IPv6 on tun0: read, write, the checksum the kernel checks, nibbles."""
    own6, peer6 = ipaddress.ip_interface(TUN_ADDRESS6).ip, ipaddress.ip_address(PEER6)
    with ctx.step(f"tun0 also has {TUN_ADDRESS6}; {PEER6} is routed to it") as step:
        route = out["read6"]["route_get"]
        assert route.get("ifname") == out["setup"]["tun"], route
        assert route.get("src") == str(own6), f"source {route.get('src')}, not {own6}"
        step.detail = f"route get {PEER6}: dev {route['ifname']} src {route['src']}"

    with ctx.step(f"ping -6 {PEER6}: its echo request is read from the fd, 0x6_ first") as step:
        read = out["read6"]
        assert read["bytes"], f"nothing for {PEER6} read within 3 s (others: {read['others']})"
        packet = bytes.fromhex(read["bytes"])
        assert packet[0] >> 4 == 6, f"first byte 0x{packet[0]:02x}, expected 0x6_"
        assert packet[6] == packets.IPPROTO_ICMPV6, f"next header {packet[6]}, not ICMPv6 (58)"
        assert packet[8:24] == own6.packed, f"source {packet[8:24].hex()}, not {own6}"
        assert packet[24:40] == peer6.packed, f"destination {packet[24:40].hex()}"
        assert packet[40] == packets.ICMPV6_ECHO_REQUEST, f"ICMPv6 type {packet[40]}, not 128"
        assert read["checksum_ok"], "the kernel's ICMPv6 checksum does not check out"
        step.detail = (
            f"{_spaced(read['bytes'], 8)} … — 0x6_ first, next header 58, ICMPv6 type 128, "
            f"{own6} → {peer6}, checksum {packet[42:44].hex()} right over the pseudo-header"
        )
        ctx.metric("read_first_nibble6", f"{packet[0] >> 4:x}")

    with ctx.step(f"a crafted ICMPv6 echo request {PEER6} → {own6} written in: answered") as s:
        case = out["write6"]
        s.detail = _answered(case, "crafted IPv6 request")
        reply = bytes.fromhex(case["reply"])
        assert reply[40] == packets.ICMPV6_ECHO_REPLY, f"ICMPv6 type {reply[40]}, not 129"
        assert case["reply_checksum_ok"], "the kernel's reply has a wrong ICMPv6 checksum"
        s.detail += " (type 129, its checksum right over the pseudo-header)"

    with ctx.step("an ICMPv6 checksum without the pseudo-header: written, dropped, counted") as s:
        case = out["checksum_no_pseudo6"]
        assert case.get("written") == case["size"], f"write refused: {case}"
        assert case["reply"] is None, f"answered despite the wrong checksum: {case}"
        before, after = case["counters"]
        errors = after["Icmp6InCsumErrors"] - before["Icmp6InCsumErrors"]
        assert errors == 1, f"Icmp6InCsumErrors {before} → {after}, expected +1"
        s.detail = (
            f"checksum {case['checksum']} (ICMPv4's way) instead of {case['right_checksum']}: "
            f"write() returned {case['written']}, no reply, Icmp6InCsumErrors "
            f"{before['Icmp6InCsumErrors']}→{after['Icmp6InCsumErrors']} — the TUN takes any "
            "bytes, the kernel's ICMPv6 then drops them"
        )
        ctx.metric("icmp6_csum_errors", errors)

    with ctx.step("an IPv6 packet's first nibble: 4 or 6 accepted, else EINVAL") as step:
        accepted6 = sorted(n for n, r in out["nibbles6"].items() if r == "accepted")
        others = {r for n, r in out["nibbles6"].items() if n not in accepted6}
        assert accepted6 == ["4", "6"] and others == {"EINVAL"}, out["nibbles6"]
        step.detail = f"accepted {accepted6}, the 14 others EINVAL; " + _refused(
            out["bad_nibble6"], "first byte 0x56"
        )
        ctx.metric("accepted_nibbles6", accepted6)

    with ctx.step("an IPv6 packet starting 0x46: accepted, read as IPv4, dropped") as step:
        case = out["nibble4_6"]
        assert case.get("written") == case["size"], f"write refused: {case}"
        assert case["reply"] is None, f"answered: {case}"
        before, after = case["counters"]
        errors = after["IpInHdrErrors"] - before["IpInHdrErrors"]
        assert errors == 1, f"Ip InHdrErrors {before} → {after}, expected +1"
        step.detail = (
            f"write() returned {case['written']}, no reply, Ip InHdrErrors "
            f"{before['IpInHdrErrors']}→{after['IpInHdrErrors']} (no IPv4 header there)"
        )

    with ctx.step("no IFF_NO_PI: a bare IPv6 packet is lost; 00 00 86 dd first: answered") as s:
        bare, framed = out["no_pi6"]["bare"], out["no_pi6"]["with_header"]
        assert "written" in bare and bare["written"] == bare["size"], bare
        assert bare["reply"] is None, f"a bare IPv6 packet was answered on a PI tun: {bare}"
        assert framed["reply"] and framed["reply"].startswith("000086dd"), framed
        assert framed["reply_checksum_ok"], framed
        dropped = bare["rx_dropped"]
        assert dropped[1] == dropped[0] + 1, f"rx_dropped {dropped}"
        s.detail = (
            f"bare: write() returned {bare['written']}, no reply, rx_dropped {dropped[0]}→"
            f"{dropped[1]}; framed: reply read as {_spaced(framed['reply'], 8)} …"
        )


def verify(result: Result) -> None:
    assert result.metrics["read_first_byte"] == "0x45"
    assert result.metrics["accepted_nibbles"] == ["4", "6"]
    assert result.metrics["read_first_nibble6"] == "6"
    assert result.metrics["icmp6_csum_errors"] == 1
    assert result.metrics["accepted_nibbles6"] == ["4", "6"]


SCENARIO = Scenario(
    name="tun-io",
    description="read and write a TUN by hand, IPv4 and IPv6; which bytes make write() fail",
    run=run,
    key_metric="einval_causes",
)
