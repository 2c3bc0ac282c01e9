"""Admission: the open holds in memory, and the one lock every reservation decision takes.

Decisions are serialized by a lock; a decision reads the holds in memory first, then the budgets'
committed spend (store.spend), so a hold settled in between is counted at most twice, never zero
times: concurrent reservations can never over-admit. An allowed hold enters memory before the lock
is released and is written durably (the answer waits for the commit); a failed write takes it out
again. The writer settles holds in the transaction that stores their usage records and tells this
object afterwards (`settled`), so memory never forgets a hold before its cost is visible. At start,
the held rows are read back from the database: holds survive restarts and crashes.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime

from metering.budgets import Budget
from metering.store import reservations as table
from metering.store.db import Store


class Admission:
    """Open holds, and per budget the sum they hold (kept as holds come and go, so a decision costs
    nothing per hold); holds past their expiry leave the sums when next looked at."""

    def __init__(self, store: Store, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._clock = clock
        self.lock = threading.RLock()
        self._holds: dict[str, table.Row] = {}
        self._sums: dict[str, list[int]] = {}  # budget_id -> [held at the current price, at the list price]
        self._expiry: list[tuple[datetime, str]] = []
        self._expired: list[str] = []
        self._budgets: tuple[int, list[Budget]] | None = None
        with store.reading() as cur:
            for row in table.held(cur):
                self.add(row)
        store.writer.on_settle(self.settled, holds_open=lambda: bool(self._holds))

    def enforced(self, version: int, read: Callable[[], list[Budget]]) -> list[Budget]:
        """The active budgets that enforce their amount, read again only when budgets changed: `version`
        is store.version("budgets") taken before the snapshot `read` reads from began (changes are
        noted after their commits, so what is kept under a version is never older than it)."""
        if self._budgets is None or self._budgets[0] != version:
            self._budgets = (version, [b for b in read() if b.enforce])
        return self._budgets[1]

    @contextmanager
    def deciding(self) -> Iterator[None]:
        with self.lock:
            yield

    def held(self, budget_id: str, basis: str) -> int:
        """Pico-dollars held against a budget by open, unexpired holds (call under the lock for a decision)."""
        with self.lock:
            self._expire(self._clock())
            sums = self._sums.get(budget_id)
            return 0 if sums is None else sums[0 if basis == "cost" else 1]

    def holding(self, request_id: str) -> table.Row | None:
        return self._holds.get(request_id)

    def add(self, row: table.Row) -> None:
        with self.lock:
            self._holds[row.request_id] = row
            for bid in row.budget_ids:
                sums = self._sums.setdefault(bid, [0, 0])
                sums[0] += row.hold_pico
                sums[1] += row.list_hold_pico
            heapq.heappush(self._expiry, (row.expires_at, row.request_id))

    def drop(self, request_ids: list[str]) -> None:
        with self.lock:
            for rid in request_ids:
                row = self._holds.pop(rid, None)
                if row is not None:
                    for bid in row.budget_ids:
                        sums = self._sums[bid]
                        sums[0] -= row.hold_pico
                        sums[1] -= row.list_hold_pico

    def _expire(self, now: datetime) -> None:
        while self._expiry and self._expiry[0][0] <= now:
            _, rid = heapq.heappop(self._expiry)
            row = self._holds.get(rid)
            if row is not None and row.expires_at <= now:
                self._expired.append(rid)
                self.drop([rid])

    def settled(self, request_ids: list[str]) -> None:
        """The writer committed the usage records of these holds (called on the writer thread)."""
        self.drop(request_ids)

    def expired(self) -> list[str]:
        """Holds that passed their expiry since last asked (they count no more): to be marked in the table."""
        with self.lock:
            self._expire(self._clock())
            out, self._expired = self._expired, []
            return out
