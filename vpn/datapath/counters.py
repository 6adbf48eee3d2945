"""Traffic and drop counts of one connection, and their sums for a gateway or a client."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Counters:
    rx_bytes: int = 0
    rx_packets: int = 0
    tx_bytes: int = 0
    tx_packets: int = 0
    dropped_spoofed: int = 0
    dropped_queue: int = 0
    dropped_invalid: int = 0
    dropped_unroutable: int = 0
    dropped_filtered: int = 0
    dropped_bad_vnet: int = 0  # a client's virtio_net_hdr the kernel must not act on

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)

    def add(self, other: Counters) -> None:
        """Fold another's counts into these (a closed session's into its server's totals)."""
        for name, value in other.__dict__.items():
            setattr(self, name, getattr(self, name) + value)

    def plus(self, *others: Counters) -> Counters:
        """These counts and the others', as a new Counters."""
        total = Counters(**self.__dict__)
        for other in others:
            total.add(other)
        return total
