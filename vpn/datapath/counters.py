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


BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)  # batch sizes: powers of two, then +Inf


class BatchSizes:
    """How many packets each read of a peer's TLS stream handed over: one list index and two
    additions per batch (never per packet); the metrics collector reads it at scrape time."""

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)  # per bucket (not cumulative); last: above 256
        self.sum = 0

    def observe(self, packets: int) -> None:
        index = (packets - 1).bit_length() if packets > 0 else 0
        self.counts[min(index, len(BUCKETS))] += 1
        self.sum += packets


BATCHES = BatchSizes()  # one per process: the channel's walk records into it
