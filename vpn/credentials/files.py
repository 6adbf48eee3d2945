"""Writing files so that a crash never leaves half of one: the PKI's keys and the password file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_replace(path: Path, data: bytes, mode: int) -> None:
    """Write a file atomically: a temporary file (O_EXCL, final mode) renamed over the old one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
