"""The single writer: one thread owns every write, and groups concurrent ingest batches
into one transaction (group commit), so a hundred concurrent single-record POSTs share one
commit (one WAL fsync) instead of paying one each.

A submitted batch's future resolves only after its transaction has committed: an
acknowledged record is durable.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC
from typing import TYPE_CHECKING, Any, TypeVar

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from metering.batch import records_table
from metering.errors import StorageUnavailable
from metering.pricing import MAX_COST_PICO, CostOverflow, total_pico, unit_prices, units_table
from metering.records import TOKEN_FIELDS, UsageRecord
from metering.tokenclasses import sql_cost

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
    records: Sequence[UsageRecord] | pa.Table  # parsed records, or a canonical table (metering.batch)
    future: Future = field(default_factory=Future)

    def __len__(self) -> int:
        return len(self.records)


@dataclass
class _Call:
    fn: Callable[[duckdb.DuckDBPyConnection], Any]
    future: Future = field(default_factory=Future)


_STOP = object()

ACCEPTED_OUTCOME = Outcome(ACCEPTED)
DUPLICATE_OUTCOME = Outcome(DUPLICATE)

_INSERT_PRICED = "INSERT OR IGNORE INTO ledger BY NAME SELECT *, $received AS received_at FROM ingest_batch"
# Priced as it is inserted: the version in effect at occurred_at (an ASOF join on the rate card's
# unit prices), the integer cost of pricing.py in HUGEINT; a cost beyond BIGINT is left out.
PRICED = f"""
SELECT l.*, $received AS received_at, v.version_id AS rate_version_id,
       CASE WHEN v.version_id IS NOT NULL THEN {sql_cost('cur')} END AS cost_huge,
       CASE WHEN v.version_id IS NOT NULL THEN {sql_cost('list')} END AS list_huge
FROM ingest_batch l
ASOF LEFT JOIN rate_units v ON l.model = v.model AND l.occurred_at >= v.effective_from
"""  # noqa: S608 (fixed SQL: the basis names are constants)
_INSERT_LEDGER = f"""
INSERT OR IGNORE INTO ledger BY NAME
SELECT * EXCLUDE (cost_huge, list_huge), cost_huge::BIGINT AS cost_pico, list_huge::BIGINT AS list_cost_pico
FROM ({PRICED})
WHERE rate_version_id IS NULL OR (cost_huge <= {MAX_COST_PICO} AND list_huge <= {MAX_COST_PICO})
"""  # noqa: S608 (fixed SQL: the basis names are constants)
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
# Constant bounds (not a subquery), so the ledger scan skips every row group outside them (zone maps).
_FLUSH = ROLLUP_UPSERT.format(source="(SELECT * FROM ledger WHERE seq > $lo AND seq <= $hi)")
FLUSH_RECORDS = 50_000  # roll up at least this often (in records) ...
FLUSH_SECONDS = 1.0  # ... and this often (in seconds) while anything is pending


class Writer:
    def __init__(self, store: Store, *, max_group_records: int = MAX_GROUP_RECORDS) -> None:
        self._store = store
        self._max_group = max_group_records
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._con = store.cursor()
        self._held: Any = None
        self._units_cache: pa.Table | None = None
        self._units_key: tuple | None = None
        self._seq = int(self._con.execute("SELECT coalesce(max(seq), 0) FROM ledger").fetchall()[0][0])
        (watermark,) = self._con.execute("SELECT watermark FROM rollup_state").fetchall()[0]
        self._unflushed = self._seq - int(watermark)  # a tail left by a crash is rolled up soon after start
        self._last_flush = time.monotonic()
        self.groups_committed = 0
        self._listeners: list[Callable[[], None]] = []
        self._thread = threading.Thread(target=self._run, name="metering-writer", daemon=True)
        self._thread.start()

    # --- public ----------------------------------------------------------------------------------
    def submit_ingest(self, records: Sequence[UsageRecord] | pa.Table) -> Future:
        """Queue records (parsed, or a canonical table); the future resolves to one Outcome per
        record once committed."""
        item = _Ingest(records)
        self._queue.put(item)
        return item.future

    def ingest(self, records: Sequence[UsageRecord] | pa.Table) -> list[Outcome]:
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
        (watermark,) = con.execute("SELECT watermark FROM rollup_state").fetchall()[0]
        con.execute(_FLUSH, {"lo": int(watermark), "hi": self._seq})
        con.execute("UPDATE rollup_state SET watermark = ?, generation = generation + 1", [self._seq])
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
            size = len(item)
            while size < self._max_group:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if not isinstance(more, _Ingest):
                    self._held = more
                    break
                group.append(more)
                size += len(more)
            group.sort(key=lambda item: isinstance(item.records, pa.Table))  # parsed records first
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
            failure = _storage_error(exc)
            if failure is not exc:
                log.error("write failed, nothing of it stored: %s", exc)
            for item in items:
                item.future.set_exception(failure)
            return
        for item, result in zip(items, results, strict=True):
            item.future.set_result(result)

    # --- ingest -------------------------------------------------------------------------------------
    def _units(self) -> pa.Table:
        """Every rate version's unit prices, rebuilt when a version is added."""
        card = self._store.card
        key = tuple(v.id for v in card.all_versions())
        if self._units_key != key:
            self._units_cache, self._units_key = units_table(card), key
        return self._units_cache

    def _ingest_group(self, group: list[_Ingest]) -> list[list[Outcome]]:
        """Insert and price a group's records; tell each request what became of its own.

        The usual group (new request_ids, all priceable) costs one INSERT per kind of input (parsed
        records from small bodies, priced here; tables from large bodies, priced by the INSERT).
        Only when the ledger took fewer rows than it was given does the slow path look row by row:
        a request_id seen before is a duplicate if the stored usage is the same, a conflict otherwise.
        """
        # Parsed records (small bodies, first in the group) become one table, not one per request.
        parsed = [record for item in group if not isinstance(item.records, pa.Table) for record in item.records]
        tables = ([records_table(parsed)] if parsed else []) + [
            item.records for item in group if isinstance(item.records, pa.Table)]
        batch = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
        n = batch.num_rows
        unique = n < 2 or pc.count_distinct(batch.column("request_id")).as_py() == n
        keep = range(n) if unique else sorted(_first_positions(batch.column("request_id").to_pylist()).values())
        candidates = batch if unique else batch.take(keep)
        lo = self._seq + 1
        self._seq += candidates.num_rows
        candidates = candidates.append_column("seq", pa.array(range(lo, self._seq + 1), pa.int64()))
        received = {"received": self._store.clock().astimezone(UTC).replace(tzinfo=None)}
        small = bisect.bisect_left(keep, len(parsed))  # candidates that came as parsed records
        count = 0
        try:
            if small:  # priced in Python: for a few rows, cheaper than planning the pricing join
                self._con.register("ingest_batch", self._priced(candidates.slice(0, small),
                                                                [parsed[p] for p in keep[:small]]))
                ((inserted,),) = self._con.execute(_INSERT_PRICED, received).fetchall()
                count += inserted
            if small < candidates.num_rows:
                self._con.register("ingest_batch", candidates.slice(small))
                self._con.register("rate_units", self._units())
                ((inserted,),) = self._con.execute(_INSERT_LEDGER, received).fetchall()
                count += inserted
            self._unflushed += count
            if count == n:
                return [[ACCEPTED_OUTCOME] * len(item) for item in group]
            self._con.register("ingest_batch", candidates)
            ids = batch.column("request_id").to_pylist()
            outcomes = self._settle(batch, ids, _first_positions(ids), lo)
        finally:
            for name in ("ingest_batch", "rate_units"):
                with contextlib.suppress(duckdb.Error):
                    self._con.unregister(name)
        results, start = [], 0
        for item in group:
            results.append(outcomes[start:start + len(item)])
            start += len(item)
        return results

    def _priced(self, table: pa.Table, records: list[UsageRecord]) -> pa.Table:
        """The rows with their rate version and costs (pricing.py); a cost out of range leaves its row out."""
        card = self._store.card
        columns: tuple[list, list, list] = ([], [], [])
        keep = []
        for row, record in enumerate(records):
            version = card.version_at(record.model, record.occurred_at)
            priced: tuple = (None, None, None)
            if version is not None:
                try:
                    priced = (version.id, total_pico(record, unit_prices(version, "current")),
                              total_pico(record, unit_prices(version, "list")))
                except CostOverflow:
                    continue
            keep.append(row)
            for column, value in zip(columns, priced, strict=True):
                column.append(value)
        if len(keep) < len(records):
            table = table.take(keep)
        return (table.append_column("rate_version_id", pa.array(columns[0], pa.int32()))
                .append_column("cost_pico", pa.array(columns[1], pa.int64()))
                .append_column("list_cost_pico", pa.array(columns[2], pa.int64())))

    def _settle(self, batch: pa.Table, ids: list[str], first: dict[str, int], lo: int) -> list[Outcome]:
        """Outcomes when not every row was inserted: duplicates, conflicts, costs out of range."""
        inserted = {row[0] for row in self._con.execute(
            "SELECT request_id FROM ledger WHERE seq BETWEEN $lo AND $hi", {"lo": lo, "hi": self._seq}).fetchall()}
        stored = {row[0]: row[1:] for row in self._con.execute(_STORED).fetchall()}  # those not inserted now
        rows = batch.select(CONTENT).to_pylist()
        contents = [_content(tuple(row.values())) for row in rows]
        outcomes: list[Outcome] = []
        for pos, rid in enumerate(ids):
            head = first[rid]
            if rid in inserted:
                same = pos == head or contents[pos] == contents[head]
                outcomes.append(ACCEPTED_OUTCOME if pos == head else DUPLICATE_OUTCOME if same else _conflict(rid))
            elif rid in stored:
                outcomes.append(DUPLICATE_OUTCOME if contents[pos] == _content(stored[rid]) else _conflict(rid))
            else:  # priced, but the cost does not fit: the only row the INSERT leaves out
                outcomes.append(Outcome("rejected", f"request_id {rid!r}: the cost of this record is beyond the "
                                                    "supported range (2^63-1 pico-dollars)"))
        return outcomes


_STORAGE_FAILURES = ("No space left on device", "Disk quota exceeded", "Input/output error", "Read-only file system",
                     "Could not write file", "Failed to commit")


def _storage_error(exc: BaseException) -> BaseException:
    """A failed write of the database file -> StorageUnavailable (503); anything else as it is."""
    if isinstance(exc, (duckdb.IOException, duckdb.TransactionException, OSError)) and any(
            text in str(exc) for text in _STORAGE_FAILURES):
        return StorageUnavailable(
            f"the database could not be written ({str(exc).splitlines()[0][:200]}); nothing of this request was "
            "stored; send it again once the operator has freed space")
    return exc


CONTENT = ["occurred_at", "api_key_id", "model", "endpoint", *TOKEN_FIELDS, "tags"]
_STORED = (
    "SELECT l.request_id, " + ", ".join(f"l.{c}" for c in CONTENT)  # noqa: S608 (constant column names)
    + " FROM ledger l SEMI JOIN ingest_batch b ON l.request_id = b.request_id AND l.seq NOT BETWEEN "
    "(SELECT min(seq) FROM ingest_batch) AND (SELECT max(seq) FROM ingest_batch)"
)


def _first_positions(ids: list[str]) -> dict[str, int]:
    """request_id -> the position of its first occurrence (which is the one inserted)."""
    first: dict[str, int] = {}
    for pos, rid in enumerate(ids):
        first.setdefault(rid, pos)
    return first


def _content(row: tuple) -> tuple:
    """The usage a row records, comparable whichever way it was read (tags as a sorted tuple)."""
    *head, tags = row
    if isinstance(tags, dict):
        tags = tags.items()
    return (*head, tuple(sorted(tags)) if tags else None)


def _conflict(rid: str) -> Outcome:
    return Outcome("rejected", f"request_id {rid!r}: conflict: a record with this request_id and different content "
                               "is already stored")
