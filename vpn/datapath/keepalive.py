"""The keepalive timer both ends run: a KEEPALIVE after `keepalive` seconds of sending nothing,
and the connection closed after `dead_peer` seconds of receiving nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from vpn import protocol
from vpn.datapath.channel import Channel


async def keep_alive(
    channels: Callable[[], Iterable[Channel]],
    keepalive: float,
    dead_peer: float,
    silence: str,
) -> None:
    """Watch the connections `channels()` returns, until cancelled. A dead one is closed with
    the reason `silence` (e.g. "nothing received for 30 s")."""
    tick = min(1.0, keepalive / 2)
    while True:
        await asyncio.sleep(tick)
        now = time.monotonic()
        for channel in list(channels()):
            if now - channel.last_rx > dead_peer:
                channel.close(f"dead peer: {silence}")
            elif now - channel.last_tx > keepalive:
                channel.send_frame(protocol.KEEPALIVE_FRAME)
