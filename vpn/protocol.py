"""The vpnlab wire protocol: frames inside the TLS stream (see docs/protocol.md).

Pure functions and small classes only — no sockets, no clocks — so every rule can be tested on
bytes. A frame is a 4-byte big-endian header word, type in the top 8 bits and payload length in
the low 24 bits, followed by the payload. DATA carries one IP packet (with a virtio_net_hdr in
front when offloads were negotiated); control messages carry a JSON object.
"""

from __future__ import annotations

import ipaddress
import json
import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from vpn import wirefields, wirejson
from vpn.errors import ProtocolError

VERSION = 1
HEADER = struct.Struct("!I")
HEADER_LEN = HEADER.size
LENGTH_MASK = 0xFFFFFF
TYPE_SHIFT = 24

# Limits: a GSO super-packet is at most 64 KiB plus its 10-byte virtio header; a control message
# is a small JSON object. Anything longer is an attack or a bug, never a reason to allocate.
MAX_DATA = 65535 + 16
MAX_CONTROL = 8192
MAX_NAME = 64
MAX_ROUTES = wirefields.MAX_ROUTES
VNET_HDR_LEN = 10
FEATURE_OFFLOAD = "offload"
FEATURE_TAP = "tap"


class MsgType(IntEnum):
    HELLO = 1
    CONFIG = 2
    DATA = 3
    KEEPALIVE = 4
    BYE = 5
    ERROR = 6


DATA = int(MsgType.DATA)
DATA_WORD = DATA << TYPE_SHIFT
_KNOWN = frozenset(int(t) for t in MsgType)


def data_header(length: int) -> bytes:
    """The 4-byte header of a DATA frame whose payload is `length` bytes."""
    return HEADER.pack(DATA_WORD | length)


def encode(msg_type: MsgType, payload: bytes = b"") -> bytes:
    limit = MAX_DATA if msg_type == MsgType.DATA else MAX_CONTROL
    if len(payload) > limit:
        raise ValueError(f"{msg_type.name} payload of {len(payload)} bytes exceeds {limit}")
    return HEADER.pack((int(msg_type) << TYPE_SHIFT) | len(payload)) + payload


def encode_control(msg_type: MsgType, message: dict[str, Any]) -> bytes:
    body = json.dumps(message, separators=(",", ":"), sort_keys=True).encode()
    return encode(msg_type, body)


@dataclass(frozen=True)
class Frame:
    type: MsgType
    payload: memoryview | bytes


def parse_header(word: int) -> tuple[int, int]:
    """Split a header word and enforce the limits; (type, length)."""
    msg_type = word >> TYPE_SHIFT
    length = word & LENGTH_MASK
    if msg_type not in _KNOWN:
        raise ProtocolError(f"unknown frame type {msg_type}")
    limit = MAX_DATA if msg_type == DATA else MAX_CONTROL
    if length > limit:
        name = MsgType(msg_type).name
        raise ProtocolError(f"{name} frame of {length} bytes exceeds the limit of {limit}")
    return msg_type, length


Control = tuple[int, memoryview]


def walk(buf: memoryview, pos: int, end: int) -> tuple[list[memoryview], Control | None, int, int]:
    """The one frame walker: from `pos`, the DATA payloads up to the first control frame; that
    control frame as (type, payload), or None; where the walk stopped; and `need`, the offset
    at which the frame there will be complete (the end of its header if even that is missing).

    Payloads are views into `buf`, never copies. The channel's hot loop calls this once per
    batch of packets; `split_frames` is the same walk collected into Frames.
    """
    packets: list[memoryview] = []
    unpack = HEADER.unpack_from
    data, shift, mask, limit = DATA, TYPE_SHIFT, LENGTH_MASK, MAX_DATA
    need = pos + HEADER_LEN
    while end >= need:
        word = unpack(buf, pos)[0]
        kind, length = word >> shift, word & mask
        if kind == data:
            if length > limit:
                raise ProtocolError(f"DATA frame of {length} bytes exceeds the limit of {limit}")
            stop = need + length
            if stop > end:
                return packets, None, pos, stop
            packets.append(buf[need:stop])
            pos = stop
            need = pos + HEADER_LEN
            continue
        kind, length = parse_header(word)
        stop = need + length
        if stop > end:
            return packets, None, pos, stop
        return packets, (kind, buf[need:stop]), stop, stop + HEADER_LEN
    return packets, None, pos, need


def split_frames(buf: memoryview, start: int, end: int) -> tuple[list[Frame], int]:
    """Every complete frame in buf[start:end]; and where the first incomplete one begins."""
    frames: list[Frame] = []
    pos = start
    while True:
        packets, control, pos, _ = walk(buf, pos, end)
        frames.extend(Frame(MsgType.DATA, packet) for packet in packets)
        if control is None:
            return frames, pos
        frames.append(Frame(MsgType(control[0]), control[1]))


# -- control messages --------------------------------------------------------------------------


def _load(payload: bytes | memoryview, what: str) -> dict[str, Any]:
    return wirejson.load_object(payload, what)


def _string(message: dict[str, Any], key: str, what: str, *, required: bool = True) -> str:
    value = message.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or len(value) > MAX_NAME * 4:
        raise ProtocolError(f"{what}: field {key!r} must be a string of at most {MAX_NAME * 4}")
    return value


@dataclass(frozen=True)
class Hello:
    """The client's first message: who it is and what it can do."""

    version: int
    name: str
    features: frozenset[str] = frozenset()
    user: str = ""
    password: str = field(default="", repr=False)
    address: str = ""  # the address it had before a reconnect, if any
    address6: str = ""  # its IPv6 address before a reconnect, if any

    def encode(self) -> bytes:
        message: dict[str, Any] = {
            "version": self.version,
            "name": self.name,
            "features": sorted(self.features),
        }
        if self.user:
            message["user"] = self.user
            message["password"] = self.password
        if self.address:
            message["address"] = self.address
        if self.address6:
            message["address6"] = self.address6
        return encode_control(MsgType.HELLO, message)


def decode_hello(payload: bytes | memoryview) -> Hello:
    message = _load(payload, "HELLO")
    version = message.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ProtocolError("HELLO: field 'version' must be an integer")
    if version != VERSION:
        raise ProtocolError(f"HELLO: protocol version {version} not supported (this is {VERSION})")
    features = message.get("features", [])
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        raise ProtocolError("HELLO: field 'features' must be a list of strings")
    address = _string(message, "address", "HELLO", required=False)
    if address:
        try:
            ipaddress.IPv4Address(address)
        except ValueError:
            raise ProtocolError(f"HELLO: 'address' {address!r} is not an IPv4 address") from None
    address6 = _string(message, "address6", "HELLO", required=False)
    if address6:
        try:
            address6 = str(wirefields.address6(address6))
        except ValueError:
            raise ProtocolError(f"HELLO: 'address6' {address6!r} is not an IPv6 address") from None
    return Hello(
        version=version,
        name=_string(message, "name", "HELLO")[:MAX_NAME],
        features=frozenset(features[:16]),
        user=_string(message, "user", "HELLO", required=False),
        password=_string(message, "password", "HELLO", required=False),
        address=address,
        address6=address6,
    )


@dataclass(frozen=True)
class Config:
    """What the server pushes: the client's tunnel address, routes, name servers and timers.

    Sent once after HELLO, and again in the data phase when the gateway's settings are reloaded
    (an update: the same address, MTU and features, other routes or name servers)."""

    address: ipaddress.IPv4Interface
    server_address: ipaddress.IPv4Address
    mtu: int
    routes: tuple[ipaddress.IPv4Network, ...]
    keepalive: float
    dead_peer: float
    offload: bool = False
    tap: bool = False  # layer 2: DATA frames carry Ethernet frames for a TAP device
    dns: tuple[ipaddress.IPv4Address, ...] = ()  # name servers on the far side of the tunnel
    search: tuple[str, ...] = ()  # search domains to go with them
    # IPv6 (the gateway has --pool6): the client's address with the pool's prefix, the
    # gateway's own, and the IPv6 networks to route through the tunnel
    address6: ipaddress.IPv6Interface | None = None
    server_address6: ipaddress.IPv6Address | None = None
    routes6: tuple[ipaddress.IPv6Network, ...] = ()

    def encode(self) -> bytes:
        message: dict[str, Any] = {
            "address": str(self.address),
            "server_address": str(self.server_address),
            "mtu": self.mtu,
            "routes": [str(r) for r in self.routes],
            "keepalive": self.keepalive,
            "dead_peer": self.dead_peer,
            "features": [
                f for f, on in ((FEATURE_OFFLOAD, self.offload), (FEATURE_TAP, self.tap)) if on
            ],
        }
        if self.dns or self.search:
            message["dns"] = {"servers": [str(a) for a in self.dns], "search": list(self.search)}
        if self.address6 is not None and self.server_address6 is not None:
            message["address6"] = str(self.address6)
            message["server_address6"] = str(self.server_address6)
            message["routes6"] = [str(r) for r in self.routes6]
        return encode_control(MsgType.CONFIG, message)

    def same_link(self, other: Config) -> bool:
        """True when `other` differs from this one only in what can change live: routes, name
        servers, search domains and timers."""
        keep = ("address", "server_address", "mtu", "offload", "tap", "address6", "server_address6")
        return all(getattr(self, k) == getattr(other, k) for k in keep)


def _dns(value: Any) -> tuple[tuple[ipaddress.IPv4Address, ...], tuple[str, ...]]:
    if not isinstance(value, dict) or not set(value) <= {"servers", "search"}:
        raise ValueError("must be an object with 'servers' and 'search' lists")
    servers = wirefields.field(value, "servers", wirefields.name_servers, ())
    return servers, wirefields.field(value, "search", wirefields.search_domains, ())


def decode_config(payload: bytes | memoryview) -> Config:
    message = _load(payload, "CONFIG")
    field = wirefields.field
    keepalive = field(message, "keepalive", float)
    dead_peer = field(message, "dead_peer", float)
    if not (0 < keepalive <= 3600 and keepalive < dead_peer <= 86400):
        raise ProtocolError("CONFIG: keepalive must be in (0, 3600] and below dead_peer (<= 86400)")
    features = field(message, "features", wirefields.features, [])
    dns, search = field(message, "dns", _dns, ((), ()))
    address6 = server_address6 = None
    routes6: tuple[ipaddress.IPv6Network, ...] = ()
    if "address6" in message:
        address6 = field(message, "address6", wirefields.interface6)
        server_address6 = field(message, "server_address6", wirefields.address6)
        routes6 = field(message, "routes6", wirefields.routes6, ())
    mtu = field(message, "mtu", wirefields.mtu)
    if address6 is not None and mtu < wirefields.IPV6_MIN_MTU:
        raise ProtocolError(f"CONFIG: mtu {mtu} is below {wirefields.IPV6_MIN_MTU}, IPv6's least")
    return Config(
        address=field(message, "address", ipaddress.IPv4Interface),
        server_address=field(message, "server_address", ipaddress.IPv4Address),
        mtu=mtu,
        routes=field(message, "routes", wirefields.routes, ()),
        keepalive=keepalive,
        dead_peer=dead_peer,
        offload=FEATURE_OFFLOAD in features,
        tap=FEATURE_TAP in features,
        dns=dns,
        search=search,
        address6=address6,
        server_address6=server_address6,
        routes6=routes6,
    )


def encode_reason(msg_type: MsgType, reason: str, *, retry: bool = True) -> bytes:
    """ERROR or BYE with a human-readable reason; retry=False tells a client not to come back
    (its credentials were refused: trying again cannot help)."""
    return encode_control(msg_type, {"reason": reason[:512], "retry": retry})


def decode_reason(payload: bytes | memoryview) -> tuple[str, bool]:
    """(reason, retry) of an ERROR or BYE."""
    if not payload:
        return "", True
    message = _load(payload, "ERROR/BYE")
    reason = message.get("reason", "")
    retry = message.get("retry", True)
    return (reason[:512] if isinstance(reason, str) else ""), retry is not False


KEEPALIVE_FRAME = encode(MsgType.KEEPALIVE)


# -- order of messages -------------------------------------------------------------------------

# What each side may receive in each phase. A frame outside its phase is a protocol error.
SERVER_EXPECTS = {
    "hello": frozenset({MsgType.HELLO}),
    "auth": frozenset(),  # waiting for the password check: nothing may arrive
    "data": frozenset({MsgType.DATA, MsgType.KEEPALIVE, MsgType.BYE}),
}
CLIENT_EXPECTS = {
    "config": frozenset({MsgType.CONFIG, MsgType.ERROR, MsgType.BYE}),
    # CONFIG again in the data phase: an update after the gateway reloaded its settings
    "data": frozenset(
        {MsgType.DATA, MsgType.KEEPALIVE, MsgType.BYE, MsgType.ERROR, MsgType.CONFIG}
    ),
}


def check_order(expects: dict[str, frozenset[MsgType]], phase: str, msg_type: int) -> MsgType:
    allowed = expects[phase]
    kind = MsgType(msg_type)
    if kind not in allowed:
        wanted = " or ".join(sorted(t.name for t in allowed)) or "nothing"
        raise ProtocolError(f"{kind.name} out of order: expected {wanted} ({phase} phase)")
    return kind


# -- packets -----------------------------------------------------------------------------------


def ipv4_source(packet: bytes | memoryview, offset: int = 0) -> bytes:
    return bytes(packet[offset + 12 : offset + 16])


def ipv4_destination(packet: bytes | memoryview, offset: int = 0) -> bytes:
    return bytes(packet[offset + 16 : offset + 20])
