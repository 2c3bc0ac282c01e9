"""A cache of budgets' hourly spend over the rolled-up part of the ledger."""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import datetime

Hourly = dict[datetime, tuple[int, int]]


class StatusCache:
    """Hourly spend of a budget's rolled-up part, per window, for one state of the rollup
    (watermark, generation, keys): exact until the rollup moves (a flush, about once a second
    under ingest, or a re-rating), so a status costs only the small unrolled tail meanwhile.
    One entry per budget and window, holding the state it was computed for: a newer state
    replaces it, so the cache does not fill up with states that will not come back."""

    def __init__(self, size: int = 1024) -> None:
        self._entries: OrderedDict[tuple, tuple[tuple, Hourly]] = OrderedDict()
        self._lock = threading.Lock()
        self._size = size
        self.hits = self.misses = 0

    def get(self, key: tuple, state: tuple) -> Hourly | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] != state:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[1]

    def put(self, key: tuple, state: tuple, value: Hourly) -> None:
        with self._lock:
            self._entries[key] = (state, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
