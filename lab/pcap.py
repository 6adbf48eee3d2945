"""The one reader of pcap files (classic format, either byte order, µs or ns timestamps):
the CLI counts records with it and scenarios decode the frames it yields.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

_LITTLE = (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1")
HEADER = 24  # the file header; each record then has a 16-byte header of its own


def link_type(path: Path) -> int | None:
    """The file's link-layer type (1 Ethernet, 113 Linux cooked), None if it has no header."""
    with path.open("rb") as fh:
        head = fh.read(HEADER)
    if len(head) < HEADER:
        return None
    order = "<" if head[:4] in _LITTLE else ">"
    return int(struct.unpack_from(order + "I", head, 20)[0])


def records(path: Path) -> Iterator[bytes]:
    """The captured bytes of each record, in order (a truncated last record is yielded cut)."""
    data = path.read_bytes()
    if len(data) < HEADER:
        return
    order = "<" if data[:4] in _LITTLE else ">"
    offset = HEADER
    while offset + 16 <= len(data):
        (length,) = struct.unpack_from(order + "I", data, offset + 8)
        yield data[offset + 16 : offset + 16 + length]
        offset += 16 + length


def count_packets(path: Path) -> int:
    """Records in a pcap file."""
    return sum(1 for _ in records(path))
