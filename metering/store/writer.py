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
from metering.pricing import COST_OUT_OF_RANGE, MAX_COST_PICO
from metering.records import TOKEN_FIELDS, UsageRecord
from metering.store import rollup, spend
from metering.store.stats import SizeCounts, WriterState
from metering.timewindows import naive_utc
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


Price = tuple[int | None, int | None, int | None]  # (rate_version_id, cost_pico, list_cost_pico); None: unpriced


@dataclass(frozen=True, slots=True)
class PricedRecords:
    """Records the caller priced: one Price per record."""

    records: Sequence[UsageRecord]
    prices: Sequence[Price]

    def __len__(self) -> int:
        return len(self.records)


@dataclass(frozen=True, slots=True)
class UnpricedTable:
    """A canonical table (metering.batch) and the unit prices (metering.pricing.units_table) the INSERT
    prices it with: the version in effect at each row's occurred_at."""

    table: pa.Table
    units: pa.Table

    def __len__(self) -> int:
        return self.table.num_rows


Batch = PricedRecords | UnpricedTable


@dataclass
class _Ingest:
    batch: Batch
    future: Future = field(default_factory=Future)

    def __len__(self) -> int:
        return len(self.batch)


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
_SETTLE = """
UPDATE reservations SET status = 'settled', closed_at = $now
WHERE status = 'held' AND request_id IN (SELECT request_id FROM ledger WHERE seq BETWEEN $lo AND $hi)
RETURNING request_id
"""
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
        self._stats_lock = threading.Lock()
        self._group_records = SizeCounts()
        self._group_requests = SizeCounts()
        self._listeners: list[Callable[[], None]] = []
        self._settlement_listeners: list[Callable[[list[str]], None]] = []
        self._settled: list[str] = []
        self._seen: dict[str, tuple[int, bool]] = {}  # table -> (store version, has rows that matter)
        self._holds_open: Callable[[], bool] | None = None
        self._thread = threading.Thread(target=self._run, name="metering-writer", daemon=True)
        self._thread.start()

    # --- public ----------------------------------------------------------------------------------
    def submit_ingest(self, batch: Batch) -> Future:
        """Queue records; the future resolves to one Outcome per record once committed."""
        item = _Ingest(batch)
        self._queue.put(item)
        return item.future

    def ingest(self, batch: Batch) -> list[Outcome]:
        return self.submit_ingest(batch).result()

    def call(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run fn(connection) in a transaction of its own on the writer thread."""
        if threading.current_thread() is self._thread:
            return fn(self._con)  # already inside a write
        item = _Call(fn)
        self._queue.put(item)
        return item.future.result()

    def on_settle(self, listener: Callable[[list[str]], None], *, holds_open: Callable[[], bool] | None = None) -> None:
        """Call `listener(request_ids)` after a commit that settled reservations (on the writer thread).
        `holds_open()`, when given, says whether any hold may be open (cheaper than counting the table)."""
        self._settlement_listeners.append(listener)
        if holds_open is not None:
            self._holds_open = holds_open

    def state(self) -> WriterState:
        """A consistent snapshot of the writer's figures (any thread; cheap)."""
        with self._stats_lock:
            unflushed = self._unflushed
            waited = time.monotonic() - self._last_flush
            return WriterState(queue_depth=self._queue.qsize(), unflushed_records=unflushed,
                               lag_seconds=waited if unflushed else 0.0, groups_committed=self.groups_committed,
                               group_records=self._group_records.sizes(), group_requests=self._group_requests.sizes())

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
        con.execute(rollup.FLUSH, {"lo": int(watermark), "hi": self._seq})
        con.execute("UPDATE rollup_state SET watermark = ?, generation = generation + 1", [self._seq])
        with self._stats_lock:
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
            group.sort(key=lambda item: isinstance(item.batch, UnpricedTable))  # priced records first
            self._settled = []
            # Settled holds leave memory before the records' answers go out: a client that reads its
            # budget after the acknowledgement never sees the hold and the cost both.
            self._transaction(group, lambda g=group: self._ingest_group(g), committed=self._tell_settled)
            with self._stats_lock:
                self.groups_committed += 1
                self._group_records.observe(size)
                self._group_requests.observe(len(group))
            for listener in self._listeners:
                listener()
            self._maybe_flush()

    def _transaction(self, items: list, work: Callable[[], list],
                     committed: Callable[[], None] | None = None) -> None:
        """Run work() in one transaction; after the commit, `committed()`, then the answers."""
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
        if committed is not None:
            committed()
        for item, result in zip(items, results, strict=True):
            item.future.set_result(result)

    # --- ingest -------------------------------------------------------------------------------------
    def _ingest_group(self, group: list[_Ingest]) -> list[list[Outcome]]:
        """Insert a group's records; tell each request what became of its own.

        The usual group (new request_ids) costs one INSERT per kind of input: records priced by the
        caller, made one table here; tables priced by the INSERT itself. Only when the ledger took
        fewer rows than it was given does the slow path look row by row: a request_id seen before is a
        duplicate if the stored usage is the same, a conflict otherwise.
        """
        priced = [item.batch for item in group if isinstance(item.batch, PricedRecords)]
        records = [record for batch in priced for record in batch.records]
        prices = [price for batch in priced for price in batch.prices]
        unpriced = [item.batch for item in group if isinstance(item.batch, UnpricedTable)]
        tables = ([records_table(records)] if records else []) + [batch.table for batch in unpriced]
        batch = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
        n = batch.num_rows
        unique = n < 2 or pc.count_distinct(batch.column("request_id")).as_py() == n
        keep = range(n) if unique else sorted(_first_positions(batch.column("request_id").to_pylist()).values())
        candidates = batch if unique else batch.take(keep)
        lo = self._seq + 1
        self._seq += candidates.num_rows
        candidates = candidates.append_column("seq", pa.array(range(lo, self._seq + 1), pa.int64()))
        received = {"received": self._store.clock().astimezone(UTC).replace(tzinfo=None)}
        small = bisect.bisect_left(keep, len(records))  # candidates that came priced
        count = 0
        try:
            if small:
                self._con.register("ingest_batch", _with_prices(candidates.slice(0, small),
                                                                [prices[p] for p in keep[:small]]))
                ((inserted,),) = self._con.execute(_INSERT_PRICED, received).fetchall()
                count += inserted
            if small < candidates.num_rows:
                self._con.register("ingest_batch", candidates.slice(small))
                self._con.register("rate_units", unpriced[-1].units)  # the newest card of the group
                ((inserted,),) = self._con.execute(_INSERT_LEDGER, received).fetchall()
                count += inserted
            with self._stats_lock:
                self._unflushed += count
            if count:
                self._after_insert(lo, self._seq)
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

    def _after_insert(self, lo: int, hi: int) -> None:
        """In the inserting transaction: the budgets' spend advanced, and the reservations of the
        request_ids just stored settled (the hold goes, the actual cost counts). Each is one statement
        a group, skipped while there is no budget, or no held reservation (known from the tables, read
        again when the store says they changed)."""
        if self._any("budgets", "SELECT count(*) FROM budgets WHERE deleted_at IS NULL"):
            spend.advance(self._con, lo=lo, hi=hi)
        holds = self._holds_open() if self._holds_open is not None else self._any(
            "reservations", "SELECT count(*) FROM reservations WHERE status = 'held'")
        if holds:
            settled = self._con.execute(_SETTLE, {"lo": lo, "hi": hi, "now": naive_utc(self._store.clock())}).fetchall()
            if settled:
                self._settled.extend(rid for (rid,) in settled)
                self._seen.pop("reservations", None)  # perhaps none held now: count again next time

    def _tell_settled(self) -> None:
        settled, self._settled = self._settled, []
        for settle in self._settlement_listeners if settled else ():
            settle(settled)

    def _any(self, table: str, count_sql: str) -> bool:
        version = self._store.version(table)
        seen = self._seen.get(table)
        if seen is None or seen[0] != version:
            seen = (version, self._con.execute(count_sql).fetchall()[0][0] > 0)
            self._seen[table] = seen
        return seen[1]

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
                outcomes.append(Outcome("rejected", f"request_id {rid!r}: {COST_OUT_OF_RANGE}"))
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


def _with_prices(table: pa.Table, prices: list[Price]) -> pa.Table:
    versions, costs, lists = zip(*prices, strict=True) if prices else ((), (), ())
    return (table.append_column("rate_version_id", pa.array(versions, pa.int32()))
            .append_column("cost_pico", pa.array(costs, pa.int64()))
            .append_column("list_cost_pico", pa.array(lists, pa.int64())))


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
