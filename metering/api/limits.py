"""Fairness: one principal's expensive reads are bounded, so a tenant cannot starve the others.

At most `METERING_READS_PER_PRINCIPAL` expensive reads (usage, reports, re-rating previews) of one
token run at once; more get a 429 with Retry-After at once, without queueing. Each such read's
queries are interrupted past `METERING_QUERY_TIMEOUT` (a 429 too). `/healthz`, the gateway's budget
checks and other principals keep answering meanwhile.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from metering.access import Principal
from metering.errors import TooManyRequests


class ReadLimiter:
    def __init__(self, per_principal: int) -> None:
        self._limit = per_principal
        self._running: dict[str, int] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _who(principal: Principal) -> str:
        return f"key:{principal.key.api_key_id}" if principal.key is not None else principal.role

    @contextlib.contextmanager
    def slot(self, principal: Principal) -> Iterator[None]:
        who = self._who(principal)
        with self._lock:
            if self._running.get(who, 0) >= self._limit:
                raise TooManyRequests(f"at most {self._limit} expensive reads at once per token; retry shortly",
                                      retry_after=1)
            self._running[who] = self._running.get(who, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._running[who] -= 1
                if not self._running[who]:
                    del self._running[who]
