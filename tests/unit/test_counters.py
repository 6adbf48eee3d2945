"""The batch-size histogram's buckets, at each edge."""

from __future__ import annotations

from vpn.datapath.counters import BUCKETS, BatchSizes


def test_each_batch_lands_in_the_first_bucket_that_holds_it() -> None:
    sizes = BatchSizes()
    assert sizes.counts == [0] * 10 and sizes.sum == 0
    for packets in (0, 1, 2, 3, 4, 5, 8, 9, 255, 256, 257, 10_000):
        sizes.observe(packets)
    # buckets:       1  2  4  8 16 32 64 128 256 +Inf
    assert sizes.counts == [2, 1, 2, 2, 1, 0, 0, 0, 2, 2]
    assert sizes.sum == 0 + 1 + 2 + 3 + 4 + 5 + 8 + 9 + 255 + 256 + 257 + 10_000
    assert len(sizes.counts) == len(BUCKETS) + 1
