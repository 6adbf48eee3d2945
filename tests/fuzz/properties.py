"""What must hold for any input to the parsers a peer reaches: the frame walker, HELLO and
CONFIG decoding (vpn/protocol.py, vpn/wirejson.py) and the gateway's check of a client's
virtio_net_hdr (vpn/iface/vnet.py). Each `check_*` takes bytes and raises AssertionError when
a property fails; the short pytest run (tests/unit/test_fuzz.py) and `make fuzz` (atheris,
tests/fuzz/run.py) drive the same functions.

The properties:
- frames: a parse re-encodes to exactly the bytes it consumed (round trip), never reads past
  the input, respects every limit; a rejection is a ProtocolError with a reason, and a header
  announcing too much is refused from its 4 bytes alone (before any payload is buffered);
- HELLO and CONFIG: a decode is a fixed point of encode → decode; a rejection is a
  ProtocolError whose reason names the message ("HELLO: …", "CONFIG: …");
- vnet: what the client check lets through, the kernel's own check accepts too, and it is
  one of the shapes a TUN produces (checksum at the L4 header, GSO type matching the protocol).
"""

from __future__ import annotations

import json
import struct
from typing import Any

from vpn import protocol
from vpn.errors import ProtocolError
from vpn.iface import vnet
from vpn.protocol import MsgType

HELLO_KEYS = ("version", "name", "features", "user", "password", "address")
CONFIG_KEYS = (
    "address",
    "server_address",
    "mtu",
    "routes",
    "keepalive",
    "dead_peer",
    "features",
)


def _rejected(exc: BaseException, prefix: str = "") -> None:
    assert isinstance(exc, ProtocolError), f"{type(exc).__name__} escaped: {exc!r}"
    reason = str(exc)
    assert reason.strip(), "a rejection must say why"
    assert reason.startswith(prefix), f"reason {reason!r} does not start with {prefix!r}"


def check_frames(data: bytes) -> int:
    """The frame walker on arbitrary bytes; the number of frames it found."""
    view = memoryview(data)
    try:
        frames, used = protocol.split_frames(view, 0, len(data))
    except Exception as exc:
        _rejected(exc)
        _refused_at_its_header(data)
        return 0
    assert 0 <= used <= len(data)
    encoded = b"".join(protocol.encode(f.type, bytes(f.payload)) for f in frames)
    assert encoded == data[:used], "frames must re-encode to exactly the bytes consumed"
    for frame in frames:
        limit = protocol.MAX_DATA if frame.type == MsgType.DATA else protocol.MAX_CONTROL
        assert len(frame.payload) <= limit
    rest = data[used:]
    if len(rest) >= protocol.HEADER_LEN:  # what is left is one incomplete frame, never more
        (word,) = struct.unpack_from("!I", rest)
        assert len(rest) < protocol.HEADER_LEN + (word & protocol.LENGTH_MASK)
    return len(frames)


def _refused_at_its_header(data: bytes) -> None:
    """The rejected frame is refused from its header alone: find it, feed only its 4 bytes."""
    pos = 0
    while pos + protocol.HEADER_LEN <= len(data):
        (word,) = struct.unpack_from("!I", data, pos)
        try:
            _, length = protocol.parse_header(word)
        except ProtocolError:
            header = data[pos : pos + protocol.HEADER_LEN]
            try:
                protocol.split_frames(memoryview(header), 0, len(header))
            except ProtocolError:
                return
            raise AssertionError(
                f"header {header.hex()} refused only once its payload came"
            ) from None
        pos += protocol.HEADER_LEN + length
    raise AssertionError("a stream was rejected but no header in it is bad")


def check_hello(payload: bytes) -> bool:
    """decode_hello on arbitrary bytes; True if it decoded."""
    try:
        hello = protocol.decode_hello(payload)
    except Exception as exc:
        _rejected(exc, "HELLO: ")
        return False
    assert hello.version == protocol.VERSION
    assert len(hello.name) <= protocol.MAX_NAME and len(hello.features) <= 16
    again = protocol.decode_hello(hello.encode()[protocol.HEADER_LEN :])
    # A password is sent only with a user name (Hello.encode): without one it is dropped.
    expected = hello if hello.user else protocol.Hello(**{**vars(hello), "password": ""})
    assert again == expected, (hello, again)
    return True


def check_config(payload: bytes) -> bool:
    """decode_config on arbitrary bytes; True if it decoded."""
    try:
        config = protocol.decode_config(payload)
    except Exception as exc:
        _rejected(exc, "CONFIG: ")
        return False
    assert 576 <= config.mtu <= 65535 and len(config.routes) <= protocol.MAX_ROUTES
    assert 0 < config.keepalive <= 3600 and config.keepalive < config.dead_peer <= 86400
    assert protocol.decode_config(config.encode()[protocol.HEADER_LEN :]) == config
    return True


def check_vnet(data: bytes) -> str | None:
    """client_vnet_problem on a header, an IHL byte, a protocol and a length made of `data`."""
    raw = data[: vnet.VNET_HDR_LEN].ljust(vnet.VNET_HDR_LEN, b"\0")
    tail = data[vnet.VNET_HDR_LEN :].ljust(4, b"\0")
    hdr = vnet.parse_vnet_hdr(raw)
    assert vnet.pack_vnet_hdr(hdr) == raw
    ihl_byte, proto = tail[0], (6, 17, 1, tail[1])[tail[1] % 4]
    payload = int.from_bytes(tail[2:4], "big")
    problem = vnet.client_vnet_problem(hdr, ihl_byte, proto, payload)
    if problem is not None:
        assert problem.startswith("virtio_net_hdr "), problem
        return problem
    assert vnet.vnet_hdr_problem(hdr, payload) is None, "the client check must be the stricter"
    assert hdr.flags & ~vnet.CLIENT_FLAGS == 0 and hdr.hdr_len <= payload
    gso = hdr.gso_type & ~vnet.VNET_HDR_GSO_ECN
    if gso:
        wanted = {vnet.VNET_HDR_GSO_TCPV4: 6, vnet.VNET_HDR_GSO_UDP_L4: 17}
        assert wanted.get(gso) == proto and hdr.gso_size not in (0, vnet.GSO_BY_FRAGS)
        assert hdr.hdr_len < payload
    else:
        assert hdr.gso_type == 0 and hdr.gso_size == 0
    if hdr.flags & vnet.VNET_HDR_F_NEEDS_CSUM:
        assert hdr.csum_start == (ihl_byte & 0x0F) * 4
        assert hdr.csum_offset == {6: 16, 17: 6}[proto]
        assert hdr.csum_start + hdr.csum_offset + 2 <= payload
    return None


def json_message(keys: tuple[str, ...], pick: Any) -> bytes:
    """A JSON object with some of `keys` (and maybe one unknown key), each value drawn by
    `pick(kind)`: the structured half of the HELLO/CONFIG fuzzing, past the JSON parser."""
    message: dict[str, Any] = {}
    for key in keys:
        if pick("present"):
            message[key] = pick(key)
    if pick("extra"):
        message["x"] = pick("x")
    return json.dumps(message).encode()


# Values that reach past the JSON parser into each field's own checks: valid ones, each limit
# and its neighbour, wrong types. The fuzzers pick from these or make up a value of any type.
VOCABULARY: dict[str, list[Any]] = {
    "version": [1, 2, 0, -1, True, "1", 1.0, None],
    "name": ["client1", "", "n" * 64, "n" * 65, "n" * 256, "n" * 257, "é\u202e", 5, None, ["a"]],
    "features": [
        [],
        ["offload"],
        ["tap", "offload"],
        ["offload"] * 20,
        [str(i) for i in range(20)],
        "offload",
        [1],
        None,
    ],
    "user": ["alice", "", "u" * 256, "u" * 257, 0, None],
    "password": ["s3cret", "", "p" * 256, "p" * 257, 0, None],
    "address": ["192.168.53.7", "192.168.53.9/24", "", "300.1.1.1", "::1", "10.0.0.1/33", 7, None],
    "server_address": ["192.168.53.1", "192.168.53.1/24", "x", 1, None],
    "mtu": [576, 575, 1400, 65535, 65536, True, 1400.0, "1400", -1, None],
    "routes": [
        [],
        ["192.168.60.0/24"],
        ["10.0.0.1/8"],
        ["bad"],
        ["10.0.0.0/8"] * 64,
        ["10.0.0.0/8"] * 65,
        "192.168.60.0/24",
        [1],
        None,
    ],
    "keepalive": [10, 0, -1, 0.001, 3600, 3600.5, "10", "nan", "inf", True, None, [1]],
    "dead_peer": [30, 10, 86400, 86400.5, 1e308, "30", "nan", True, None],
    "x": [1, "x", [], {}, None, [[[[[[[[[1]]]]]]]]], {"a": {"b": {"c": [1]}}}],
}
