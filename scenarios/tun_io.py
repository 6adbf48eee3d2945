"""The lab note's TUN experiments, step by step, on the client node: read a ping from the fd,
write a crafted packet and read the kernel's answer, then the classic failing write — which
bytes give "Invalid argument", which do not, and what the project says about each.

The experiments run in one program on the node (HELPER, with the node's own `vpn` package) and
report JSON; each step here asserts on one experiment and shows its bytes.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from scenarios.lab_checks import run_json
from scenarios.runner import Context, Result, Scenario
from scenarios.tunnel import nodes_with_role

# The lab note's addresses: a network that exists only on the node's TUN device.
TUN_ADDRESS = "10.0.8.99/24"
PEER = "10.0.8.32"
PI_ADDRESS = "10.0.9.99/24"  # a second TUN, opened without IFF_NO_PI
PI_PEER = "10.0.9.32"

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


def attempt(dev, data, seq, own=OWN, peer=PEER, skip=0):
    """Write data into the fd; if the kernel took it, wait for its echo reply."""
    result = {"head": data[:32].hex(), "tail": data[-4:].hex(), "size": len(data),
              "check_packet": tun_writes.check_packet(data)}
    try:
        result["written"] = os.write(dev.fd, data)
    except OSError as err:
        result["errno"] = errno.errorcode[err.errno]
        result["explained"] = tun_writes.explain_write_error(err, data, tun=dev)
        return result
    reply, _ = read_until(dev.fd, is_reply(seq, own, peer), 1.0, skip)
    result["reply"] = reply.hex() if reply else None
    return result


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

        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
        fcntl.ioctl(fd, tun.TUNSETIFF, struct.pack("16sH22x", b"tun1", tun.IFF_TUN))
        with tun.Tun(fd, "tun1") as pi:
            net.add_address(pi.name, PI_ADDRESS)
            net.set_link(pi.name, up=True)
            stats = f"/sys/class/net/{pi.name}/statistics/rx_dropped"
            before = int(open(stats).read())
            bare = attempt(pi, request(9, PI_OWN, PI_PEER), 9, PI_OWN, PI_PEER, skip=4)
            bare["rx_dropped"] = [before, int(open(stats).read())]
            header = b"\x00\x00\x08\x00"
            framed = attempt(pi, header + request(10, PI_OWN, PI_PEER), 10, PI_OWN, PI_PEER, 4)
            out["no_pi"] = {"bare": bare, "with_header": framed}
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
        out = run_json(ctx.backend, client, "tun-io", HELPER, TUN_ADDRESS, PEER, PI_ADDRESS,
                       PI_PEER, timeout=60)  # fmt: skip
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
    causes = ("bad_nibble", "xxd_no_offsets", "xxd_offset_40", "hex_text")
    ctx.metric("einval_causes", sum(out[c].get("errno") == "EINVAL" for c in causes))
    ctx.metric("accepted_nibbles", accepted)


def verify(result: Result) -> None:
    assert result.metrics["read_first_byte"] == "0x45"
    assert result.metrics["accepted_nibbles"] == ["4", "6"]


SCENARIO = Scenario(
    name="tun-io",
    description="read and write a TUN by hand; which bytes make write() fail, and why",
    run=run,
    key_metric="einval_causes",
)
