"""The writer's figures for operators (GET /metrics): queue depth, rollup lag, group commit sizes."""

from __future__ import annotations

import bisect
from dataclasses import dataclass

GROUP_BOUNDS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000)


@dataclass(frozen=True, slots=True)
class Sizes:
    """A histogram of group commit sizes: how many groups had at most `bounds[i]` (per bucket, not
    cumulative; the last count is above every bound), and the sum of the sizes."""

    bounds: tuple[int, ...]
    counts: tuple[int, ...]
    total: int


@dataclass(frozen=True, slots=True)
class WriterState:
    """What an operator watches (GET /metrics): the queue, the rollup's lag, the commits."""

    queue_depth: int  # ingest batches and calls waiting for the writer thread
    unflushed_records: int  # committed to the ledger, not yet in the rollup (readers add them on the fly)
    lag_seconds: float  # since the last rollup flush, while records wait for the next one; else 0
    groups_committed: int
    group_records: Sizes  # records per group commit
    group_requests: Sizes  # ingest requests (batches) per group commit


class SizeCounts:
    """Counts of group sizes into GROUP_BOUNDS (the writer thread observes; any thread reads under a lock)."""

    def __init__(self) -> None:
        self.counts = [0] * (len(GROUP_BOUNDS) + 1)
        self.total = 0

    def observe(self, size: int) -> None:
        self.counts[bisect.bisect_left(GROUP_BOUNDS, size)] += 1
        self.total += size

    def sizes(self) -> Sizes:
        return Sizes(GROUP_BOUNDS, tuple(self.counts), self.total)
