"""The single writer: one thread owns every write, and groups concurrent ingest batches
into one transaction (group commit), so a hundred concurrent single-record POSTs share one
commit (one WAL fsync) instead of paying one each.

A submitted batch's future resolves only after its transaction has committed: an
acknowledged record is durable.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import duckdb
import pyarrow as pa

from metering.pricing import CostOverflow, total_pico, unit_prices
from metering.records import UsageRecord, epoch_micros

log = logging.getLogger("metering.writer")

if TYPE_CHECKING:
    from metering.store.db import Store

T = TypeVar("T")

ACCEPTED = "accepted"
DUPLICATE = "duplicate"
MAX_GROUP_RECORDS = 50_000


@dataclass(frozen=True, slots=True)
class Outcome:
    status: str  # accepted | duplicate | rejected
    error: str | None = None


@dataclass
class _Ingest:
    records: Sequence[UsageRecord]
    future: Future = field(default_factory=Future)


@dataclass
class _Call:
    fn: Callable[[duckdb.DuckDBPyConnection], Any]
    future: Future = field(default_factory=Future)


_STOP = object()

LEDGER_SCHEMA = pa.schema([
    ("request_id", pa.string()),
    ("occurred_at", pa.timestamp("us")),
    ("received_at", pa.timestamp("us")),
    ("api_key_id", pa.string()),
    ("model", pa.string()),
    ("endpoint", pa.string()),
    ("input_tokens", pa.int32()),
    ("cached_tokens", pa.int32()),
    ("cache_write_tokens", pa.int32()),
    ("output_tokens", pa.int32()),
    ("thinking_tokens", pa.int32()),
    ("web_search_requests", pa.int32()),
    ("tags", pa.map_(pa.string(), pa.string())),
    ("rate_version_id", pa.int32()),
    ("cost_pico", pa.int64()),
    ("list_cost_pico", pa.int64()),
    ("fingerprint", pa.uint64()),
    ("seq", pa.int64()),
])

_INSERT_LEDGER = (
    "INSERT OR IGNORE INTO ledger BY NAME SELECT * FROM ingest_batch RETURNING request_id"
)
ROLLUP_UPSERT = """
INSERT INTO usage_rollup
SELECT time_bucket(INTERVAL 15 MINUTE, occurred_at) AS bucket_start,
       api_key_id, model, coalesce(endpoint, '') AS endpoint,
       count(*), sum(input_tokens), sum(cached_tokens), sum(cache_write_tokens),
       sum(output_tokens), coalesce(sum(thinking_tokens), 0), sum(web_search_requests),
       coalesce(sum(cost_pico), 0), coalesce(sum(list_cost_pico), 0),
       count(*) FILTER (WHERE rate_version_id IS NULL)
FROM {source}
GROUP BY ALL
ON CONFLICT DO UPDATE SET
    requests = requests + excluded.requests,
    input_tokens = input_tokens + excluded.input_tokens,
    cached_tokens = cached_tokens + excluded.cached_tokens,
    cache_write_tokens = cache_write_tokens + excluded.cache_write_tokens,
    output_tokens = output_tokens + excluded.output_tokens,
    thinking_tokens = thinking_tokens + excluded.thinking_tokens,
    web_search_requests = web_search_requests + excluded.web_search_requests,
    cost_pico = cost_pico + excluded.cost_pico,
    list_cost_pico = list_cost_pico + excluded.list_cost_pico,
    unpriced_requests = unpriced_requests + excluded.unpriced_requests
"""
_FLUSH = ROLLUP_UPSERT.format(
    source="(SELECT * FROM ledger WHERE seq > (SELECT watermark FROM rollup_state) AND seq <= $hi)")
FLUSH_RECORDS = 50_000  # roll up at least this often (in records) ...
FLUSH_SECONDS = 1.0  # ... and this often (in seconds) while anything is pending


class Writer:
    def __init__(self, store: Store, *, max_group_records: int = MAX_GROUP_RECORDS) -> None:
        self._store = store
        self._max_group = max_group_records
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._con = store.cursor()
        self._held: Any = None
        self._seq = int(self._con.execute("SELECT coalesce(max(seq), 0) FROM ledger").fetchall()[0][0])
        (watermark,) = self._con.execute("SELECT watermark FROM rollup_state").fetchall()[0]
        self._unflushed = self._seq - int(watermark)  # a tail left by a crash is rolled up soon after start
        self._last_flush = time.monotonic()
        self.groups_committed = 0
        self._listeners: list[Callable[[], None]] = []
        self._thread = threading.Thread(target=self._run, name="metering-writer", daemon=True)
        self._thread.start()

    # --- public ----------------------------------------------------------------------------------
    def submit_ingest(self, records: Sequence[UsageRecord]) -> Future:
        """Queue records; the future resolves to one Outcome per record once committed."""
        item = _Ingest(records)
        self._queue.put(item)
        return item.future

    def ingest(self, records: Sequence[UsageRecord]) -> list[Outcome]:
        return self.submit_ingest(records).result()

    def call(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run fn(connection) in a transaction of its own on the writer thread."""
        if threading.current_thread() is self._thread:
            return fn(self._con)  # already inside a write
        item = _Call(fn)
        self._queue.put(item)
        return item.future.result()

    def on_ingest(self, listener: Callable[[], None]) -> None:
        """Call `listener` (quickly: it runs on the writer thread) after each ingest commit."""
        self._listeners.append(listener)

    def stop(self) -> None:
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        self._con.close()

    # --- the thread ----------------------------------------------------------------------------------
    def _next(self) -> Any:
        if self._held is not None:
            item, self._held = self._held, None
            return item
        while True:
            try:
                return self._queue.get(timeout=FLUSH_SECONDS)
            except queue.Empty:
                self._maybe_flush()

    def flush(self, con: duckdb.DuckDBPyConnection) -> None:
        """Bring the rollup up to date, inside the caller's transaction on the writer thread."""
        con.execute(_FLUSH, {"hi": self._seq})
        con.execute("UPDATE rollup_state SET watermark = ?", [self._seq])
        self._unflushed = 0
        self._last_flush = time.monotonic()

    def _maybe_flush(self, *, force: bool = False) -> None:
        due = self._unflushed >= FLUSH_RECORDS or time.monotonic() - self._last_flush >= FLUSH_SECONDS
        if self._unflushed and (due or force):
            def work() -> list:
                self.flush(self._con)
                return []  # no requests wait on a background flush

            self._transaction([], work)

    def _run(self) -> None:
        while True:
            item = self._next()
            if item is _STOP:
                self._maybe_flush(force=True)
                return
            if isinstance(item, _Call):
                self._transaction([item], lambda fn=item.fn: [fn(self._con)])
                continue
            group = [item]
            size = len(item.records)
            while size < self._max_group:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if not isinstance(more, _Ingest):
                    self._held = more
                    break
                group.append(more)
                size += len(more.records)
            self._transaction(group, lambda g=group: self._ingest_group(g))
            self.groups_committed += 1
            for listener in self._listeners:
                listener()
            self._maybe_flush()

    def _transaction(self, items: list, work: Callable[[], list]) -> None:
        try:
            self._con.execute("BEGIN TRANSACTION")
            results = work()
            self._con.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(duckdb.Error):
                self._con.execute("ROLLBACK")
            if not items:
                log.exception("background write failed")
            for item in items:
                item.future.set_exception(exc)
            return
        for item, result in zip(items, results, strict=True):
            item.future.set_result(result)

    # --- ingest -------------------------------------------------------------------------------------
    def _ingest_group(self, group: list[_Ingest]) -> list[list[Outcome]]:
        store = self._store
        received_at = epoch_micros(store.clock())
        flat = [record for item in group for record in item.records]
        fingerprints = [record.fingerprint() for record in flat]
        first: dict[str, int] = {}  # request_id -> position of its first occurrence in the group
        candidates: list[int] = []
        priced: dict[int, tuple] = {}  # position -> (rate version id, cost, list cost)
        overflow: dict[int, str] = {}
        units: dict[int, tuple] = {}  # rate version id -> (current, list) unit prices
        for pos, record in enumerate(flat):
            if record.request_id in first:
                continue
            first[record.request_id] = pos
            version = store.card.version_at(record.model, record.occurred_at)
            if version is not None:
                unit = units.get(version.id)  # type: ignore[arg-type]
                if unit is None:
                    unit = units[version.id] = (unit_prices(version, "current"), unit_prices(version, "list"))
                try:
                    priced[pos] = (version.id, total_pico(record, unit[0]), total_pico(record, unit[1]))
                except CostOverflow as exc:
                    overflow[pos] = str(exc)
                    continue
            candidates.append(pos)

        inserted: set[str] = set()
        if candidates:
            first_seq = self._seq + 1
            self._seq += len(candidates)
            batch = _ledger_table([flat[p] for p in candidates], [fingerprints[p] for p in candidates],
                                  [priced.get(p) for p in candidates], received_at, first_seq)
            self._con.register("ingest_batch", batch)
            try:
                inserted = {row[0] for row in self._con.execute(_INSERT_LEDGER).fetchall()}
            finally:
                self._con.unregister("ingest_batch")
            self._unflushed += len(inserted)

        # The fingerprint each request_id now has in the ledger, for those not inserted just now.
        stored: dict[str, int] = {}
        already = [flat[p].request_id for p in candidates if flat[p].request_id not in inserted]
        for chunk_start in range(0, len(already), 1000):
            chunk = already[chunk_start:chunk_start + 1000]
            rows = self._con.execute(
                "SELECT request_id, fingerprint FROM ledger WHERE request_id IN "  # noqa: S608 (placeholders only)
                f"({', '.join('?' * len(chunk))})",
                chunk,
            ).fetchall()
            stored.update(rows)
        for rid in inserted:
            stored[rid] = fingerprints[first[rid]]

        outcomes: list[Outcome] = []
        for pos, record in enumerate(flat):
            rid = record.request_id
            if first[rid] in overflow:
                outcomes.append(Outcome("rejected", overflow[first[rid]]))
            elif pos == first[rid] and rid in inserted:
                outcomes.append(Outcome(ACCEPTED))
            elif stored.get(rid) == fingerprints[pos]:
                outcomes.append(Outcome(DUPLICATE))
            else:
                outcomes.append(Outcome(
                    "rejected",
                    f"request_id {rid!r}: conflict: a record with this request_id and different content "
                    "is already stored",
                ))
        results, start = [], 0
        for item in group:
            results.append(outcomes[start:start + len(item.records)])
            start += len(item.records)
        return results


def _ledger_table(records: list[UsageRecord], fingerprints: list[int], priced: list[tuple | None],
                  received_at: int, first_seq: int | None = None) -> pa.Table:
    """Records and their prices (version id, cost, list cost) -> an Arrow table of ledger rows."""
    unpriced = (None, None, None)
    prices = [p or unpriced for p in priced]
    columns: dict[str, list] = {
        "request_id": [r.request_id for r in records],
        "occurred_at": [epoch_micros(r.occurred_at) for r in records],
        "received_at": [received_at] * len(records),
        "api_key_id": [r.api_key_id for r in records],
        "model": [r.model for r in records],
        "endpoint": [r.endpoint for r in records],
        "input_tokens": [r.input_tokens for r in records],
        "cached_tokens": [r.cached_tokens for r in records],
        "cache_write_tokens": [r.cache_write_tokens for r in records],
        "output_tokens": [r.output_tokens for r in records],
        "thinking_tokens": [r.thinking_tokens for r in records],
        "web_search_requests": [r.web_search_requests for r in records],
        "tags": [list(r.tags.items()) if r.tags else None for r in records],
        "rate_version_id": [p[0] for p in prices],
        "cost_pico": [p[1] for p in prices],
        "list_cost_pico": [p[2] for p in prices],
        "fingerprint": fingerprints,
        "seq": list(range(first_seq, first_seq + len(records))) if first_seq is not None else [None] * len(records),
    }
    arrays = []
    for f in LEDGER_SCHEMA:
        if pa.types.is_timestamp(f.type):
            arrays.append(pa.array(columns[f.name], pa.int64()).cast(f.type))
        else:
            arrays.append(pa.array(columns[f.name], f.type))
    return pa.Table.from_arrays(arrays, schema=LEDGER_SCHEMA)
