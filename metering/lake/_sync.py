"""Export a node's committed ledger rows into the lake, exactly once, crash-safely.

A node's position is its state file `DIR/_state/<node>.json`, replaced atomically and written only
after the segments it counts are durable:

- `exported_seq`: every record with `seq` <= it is in the lake; `plan_end`: the last `seq` of the
  export under way. A sync first records its plan (the largest committed `seq` it saw), then writes
  the plan's records in fixed chunks of `CHUNK_SEQ` sequence numbers, one file per UTC day of
  `occurred_at` in a chunk, advancing `exported_seq` after each chunk. A sync that was killed
  leaves the same plan behind; the next one redoes the unfinished chunks over the same rows, so
  it produces the same names and replaces any file the killed one wrote: nothing twice, no gap.
- Records from before sequence numbers existed (`seq` NULL) go once, on the first sync, in files
  numbered 0-0 (a retry rewrites the same names).
- Re-ratings: the store lists what each applied run changed (`reprice_changes`). Rows changed by
  runs after `restated_run` and already in the lake are written again with their new pricing as
  restatement segments `...-r<run>.parquet` (`restatement` = the run, `restated_at` = when it was
  applied); a reader keeps, per request_id, the newest pricing. A killed restatement is redone
  whole under the same run number, and files of that run it did not rewrite are removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from metering.errors import DatabaseLocked, MeteringError
from metering.lake._layout import (
    SEGMENT,
    LakeError,
    atomic_file,
    check_node_id,
    day_dir,
    make_dir,
    open_lake,
    segment_name,
    write_json,
)

log = logging.getLogger("metering.lake")

CHUNK_SEQ = 1_000_000  # sequence numbers per export chunk: bounds the memory of one step
MONEY = pa.decimal128(38, 12)
UTC_TS = pa.timestamp("us", tz="UTC")
SEGMENT_SCHEMA = pa.schema([
    ("request_id", pa.string()), ("occurred_at", UTC_TS), ("api_key_id", pa.string()), ("model", pa.string()),
    ("endpoint", pa.string()), ("input_tokens", pa.int32()), ("cached_tokens", pa.int32()),
    ("cache_write_tokens", pa.int32()), ("output_tokens", pa.int32()), ("thinking_tokens", pa.int32()),
    ("web_search_requests", pa.int32()), ("tags", pa.map_(pa.string(), pa.string())),
    ("received_at", UTC_TS), ("node_id", pa.string()), ("rate_version_id", pa.int32()),
    ("cost", MONEY), ("list_cost", MONEY), ("seq", pa.int64()), ("restatement", pa.int32()),
    ("restated_at", UTC_TS),
])
SEGMENT_COLUMNS = tuple(SEGMENT_SCHEMA.names)
# Encodings measured on generated ledgers (benchmarks/lake.py): delta encodings for the columns that
# rise with time and for request ids (a shared prefix), dictionaries for the rest (money included).
_DELTA = {"occurred_at": "DELTA_BINARY_PACKED", "received_at": "DELTA_BINARY_PACKED", "seq": "DELTA_BINARY_PACKED",
          "restated_at": "DELTA_BINARY_PACKED", "request_id": "DELTA_BYTE_ARRAY"}
_DICTIONARY = [name for name in SEGMENT_COLUMNS if name not in _DELTA]

_ROWS = """
SELECT l.request_id, l.occurred_at, l.api_key_id, l.model, l.endpoint, l.input_tokens, l.cached_tokens,
       l.cache_write_tokens, l.output_tokens, l.thinking_tokens, l.web_search_requests, l.tags, l.received_at,
       l.rate_version_id,
       l.cost_pico::DECIMAL(38, 0) * 0.000000000001 AS cost,
       l.list_cost_pico::DECIMAL(38, 0) * 0.000000000001 AS list_cost,
       l.seq, {restatement} AS restatement, {restated_at} AS restated_at,
       strftime(l.occurred_at, '%Y-%m-%d') AS day
FROM ledger l {join}
WHERE {where}
ORDER BY day, l.occurred_at, l.api_key_id, l.request_id
"""
_ORIGINALS = _ROWS.format(restatement="NULL::INTEGER", restated_at="NULL::TIMESTAMP", join="",
                          where="{where}")
# The latest of the runs (lo, hi] that changed each row, and when it was applied.
_RESTATED = _ROWS.format(
    restatement="c.run", restated_at="r.applied_at",
    join="JOIN (SELECT request_id, max(run_id) AS run FROM reprice_changes WHERE run_id > $lo_run AND run_id <= $hi_run "
         "GROUP BY request_id) c ON c.request_id = l.request_id JOIN reprice_runs r ON r.id = c.run",
    where="{where}")


@dataclass
class SyncResult:
    node_id: str
    records: int = 0  # records exported for the first time
    restated: int = 0  # records written again with new pricing
    segments: list[str] = field(default_factory=list)  # files written (relative to the lake)
    exported_seq: int = 0

    def summary(self) -> str:
        return (f"node {self.node_id}: {self.records:,} records exported, {self.restated:,} restated, "
                f"{len(self.segments)} segments written; the lake has this node's records up to seq "
                f"{self.exported_seq}")


# --- state -------------------------------------------------------------------------------------------


def _state_path(lake: Path, node_id: str) -> Path:
    return lake / "_state" / f"{node_id}.json"


def read_state(lake: Path, node_id: str) -> dict[str, Any]:
    path = _state_path(lake, node_id)
    base = {"node_id": node_id, "exported_seq": 0, "plan_end": None, "legacy_exported": False, "restated_run": 0,
            "restate_to": None, "keys_digest": None, "rates_digest": None}
    if not path.exists():
        return base
    try:
        data = json.loads(path.read_text())
        if data.get("node_id") != node_id:
            raise ValueError(f"it names node {data.get('node_id')!r}")
        int(data["exported_seq"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise LakeError(f"{path}: not a node state file of this lake ({exc})") from None
    return {**base, **data}


@contextlib.contextmanager
def _node_lock(lake: Path, node_id: str) -> Iterator[None]:
    """One sync per node at a time (two writers of one node's state would lose records)."""
    make_dir(lake / "_state")
    with (lake / "_state" / f".{node_id}.lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LakeError(f"another sync of node {node_id!r} into {lake} is running") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- writing segments ------------------------------------------------------------------------------------


def _segment_table(arrow: pa.Table, node_id: str) -> pa.Table:
    columns = []
    for name in SEGMENT_COLUMNS:
        if name == "node_id":
            columns.append(pa.array([node_id] * arrow.num_rows, pa.string()))
        else:
            columns.append(arrow.column(name).cast(SEGMENT_SCHEMA.field(name).type))
    return pa.Table.from_arrays(columns, schema=SEGMENT_SCHEMA)


def write_segment(path: Path, table: pa.Table) -> None:
    with atomic_file(path) as handle:
        pq.write_table(table, handle, compression="zstd", compression_level=3, use_dictionary=_DICTIONARY,
                       column_encoding=_DELTA, row_group_size=CHUNK_SEQ, write_statistics=True)


def _write_days(lake: Path, node_id: str, arrow: pa.Table, run: int | None, result: SyncResult) -> list[Path]:
    """One file per UTC day of the rows (sorted by day); returns the paths written."""
    written = []
    days = arrow.column("day")
    for day in pc.unique(days).to_pylist():
        part = arrow.filter(pc.equal(days, day))
        seqs = pc.min_max(part.column("seq")).as_py()
        first, last = (seqs["min"] or 0, seqs["max"] or 0)
        path = day_dir(lake, day) / segment_name(node_id, first, last, run)
        write_segment(path, _segment_table(part, node_id))
        written.append(path)
        result.segments.append(str(path.relative_to(lake)))
    return written


def _chunks(lo: int, hi: int) -> Iterator[tuple[int, int]]:
    """(lo, hi] cut at multiples of CHUNK_SEQ: the same cuts for every sync of the same plan."""
    start = lo
    while start < hi:
        end = min(hi, (start // CHUNK_SEQ + 1) * CHUNK_SEQ)
        yield start, end
        start = end


def _remove_temporaries(lake: Path, node_id: str) -> None:
    usage = lake / "usage"
    if not usage.is_dir():
        return
    for directory in usage.iterdir():
        for tmp in directory.glob(f".{node_id}-*.parquet.tmp"):
            tmp.unlink(missing_ok=True)


# --- snapshots ---------------------------------------------------------------------------------------------


def _digest(table: pa.Table) -> str:
    return hashlib.sha256(repr(table.to_pylist()).encode()).hexdigest()


def _snapshot(lake: Path, name: str, node_id: str, table: pa.Table, state: dict[str, Any], key: str) -> None:
    table = table.append_column("node_id", pa.array([node_id] * table.num_rows, pa.string()))
    digest = _digest(table)
    if state.get(key) == digest and (lake / name / f"{node_id}.parquet").exists():
        return
    with atomic_file(lake / name / f"{node_id}.parquet") as handle:
        pq.write_table(table, handle, compression="zstd")
    state[key] = digest


def _utc(table: pa.Table, *names: str) -> pa.Table:
    for name in names:
        table = table.set_column(table.schema.get_field_index(name), name, table.column(name).cast(UTC_TS))
    return table


# --- the sync ---------------------------------------------------------------------------------------------


def sync(store: Any, lake: Path | str, node_id: str) -> SyncResult:
    """Export what the lake lacks of this store's records (and their re-ratings, keys and rates)."""
    node_id = check_node_id(node_id)
    lake = open_lake(Path(lake), create=True)
    with _node_lock(lake, node_id):
        return _sync(store, lake, node_id)


def _sync(store: Any, lake: Path, node_id: str) -> SyncResult:
    fresh = not _state_path(lake, node_id).exists()
    state = read_state(lake, node_id)
    result = SyncResult(node_id, exported_seq=int(state["exported_seq"]))
    _remove_temporaries(lake, node_id)

    def save() -> None:
        write_json(_state_path(lake, node_id), state)

    with store.reading() as cur:
        keys = cur.sql("SELECT api_key_id, account_id, name, created_at FROM api_keys ORDER BY api_key_id").to_arrow_table()
        rates = cur.sql("SELECT * FROM rate_versions ORDER BY id").to_arrow_table()
        (committed,) = cur.execute("SELECT coalesce(max(seq), 0) FROM ledger").fetchall()[0]
        (last_run,) = cur.execute("SELECT coalesce(max(id), 0) FROM reprice_runs").fetchall()[0]
    if fresh:  # every record is exported from here on with the pricing of these runs, or newer
        state["restated_run"] = int(last_run)
    # Snapshots first: a reader that sees a segment sees the rate versions and keys it names.
    _snapshot(lake, "keys", node_id, _utc(keys, "created_at"), state, "keys_digest")
    _snapshot(lake, "rate_card", node_id, _utc(rates, "effective_from", "created_at"), state, "rates_digest")

    if not state["legacy_exported"]:
        with store.reading() as cur:
            arrow = cur.sql(_ORIGINALS.format(where="l.seq IS NULL")).to_arrow_table()
        if arrow.num_rows:
            _write_days(lake, node_id, arrow, None, result)
            result.records += arrow.num_rows
        state["legacy_exported"] = True
        save()

    # A plan left by a killed sync is finished first (same rows, same names); then one for what is new.
    while state["plan_end"] is not None or int(committed) > int(state["exported_seq"]):
        if state["plan_end"] is None:
            state["plan_end"] = int(committed)
            save()
        for lo, hi in _chunks(int(state["exported_seq"]), int(state["plan_end"])):
            with store.reading() as cur:
                arrow = cur.sql(_ORIGINALS.format(where=f"l.seq > {lo} AND l.seq <= {hi}")).to_arrow_table()
            if arrow.num_rows:
                _write_days(lake, node_id, arrow, None, result)
                result.records += arrow.num_rows
            state["exported_seq"] = hi
            save()
        state["plan_end"] = None
        save()

    while state["restate_to"] is not None or int(last_run) > int(state["restated_run"]):
        if state["restate_to"] is None:
            state["restate_to"] = int(last_run)
            save()
        _restate(store, lake, node_id, state, result)
        state["restated_run"], state["restate_to"] = state["restate_to"], None
        save()
    result.exported_seq = int(state["exported_seq"])
    return result


def _restate(store: Any, lake: Path, node_id: str, state: dict[str, Any], result: SyncResult) -> None:
    lo_run, hi_run = int(state["restated_run"]), int(state["restate_to"])
    exported = int(state["exported_seq"])
    params = {"lo_run": lo_run, "hi_run": hi_run}
    with store.reading() as cur:
        low, high, legacy = cur.execute(
            "SELECT min(l.seq), max(l.seq), count(*) FILTER (WHERE l.seq IS NULL) FROM ledger l "
            "SEMI JOIN reprice_changes c ON c.request_id = l.request_id AND c.run_id > $lo_run AND c.run_id <= $hi_run",
            params).fetchall()[0]
    written: set[Path] = set()
    wheres = [f"l.seq > {lo} AND l.seq <= {hi}" for lo, hi in _chunks(int(low or 1) - 1, min(int(high or 0), exported))]
    if legacy:
        wheres.append("l.seq IS NULL")
    for where in wheres:
        with store.reading() as cur:
            arrow = cur.sql(_RESTATED.format(where=where), params=params).to_arrow_table()
        if arrow.num_rows:
            written.update(_write_days(lake, node_id, arrow, hi_run, result))
            result.restated += arrow.num_rows
    # Files of this run left by a killed attempt over rows that a later run has since changed again.
    usage = lake / "usage"
    for directory in usage.iterdir() if usage.is_dir() else ():
        for path in directory.glob(f"{node_id}-*-r{hi_run}.parquet"):
            match = SEGMENT.match(path.name)
            if match and match["node"] == node_id and path not in written:
                path.unlink()


# --- opening a database file for a sync --------------------------------------------------------------------


def sync_file(db_path: Path | str, lake: Path | str, node_id: str) -> SyncResult:
    """`metering lake sync --db PATH`: open the file (a server holding it gets a clear message)."""
    from metering.store.db import Store

    check_node_id(node_id)
    db_path = Path(db_path)
    if not db_path.is_file():
        raise MeteringError(f"{db_path}: no such database file")
    try:
        store = Store(db_path)
    except DatabaseLocked:
        raise DatabaseLocked(
            f"the database file {db_path} is in use by another process, probably `metering serve`; a serving node "
            "exports to the lake itself: run it with `metering serve --lake DIR --node-id ID`") from None
    try:
        return sync(store, lake, node_id)
    finally:
        store.close()


# --- continuous export in a server -------------------------------------------------------------------------


class LakeSyncer:
    """Syncs a serving store into the lake every `interval` seconds on a thread of its own (reads
    use the store's snapshots, so ingest never waits), and once more when stopped."""

    def __init__(self, store: Any, lake: Path | str, node_id: str, *, interval: float = 2.0) -> None:
        self.store, self.lake, self.node_id, self.interval = store, Path(lake), check_node_id(node_id), interval
        open_lake(self.lake, create=True)  # a bad directory stops start-up, not the thread
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metering-lake-sync", daemon=True)
        self.last: SyncResult | None = None
        self.failures = 0

    def start(self) -> LakeSyncer:
        self._thread.start()
        return self

    def _once(self) -> None:
        try:
            self.last = sync(self.store, self.lake, self.node_id)
        except Exception as exc:  # the service goes on; the next round retries
            self.failures += 1
            log.error("lake sync into %s failed: %s", self.lake, getattr(exc, "message", exc))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._once()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join()
        self._once()


def orphan_temporaries(lake: Path) -> list[Path]:
    """Temporary files anywhere in the lake's usage (left by killed syncs; harmless, hidden)."""
    usage = Path(lake) / "usage"
    return [p for p in usage.rglob(".*.tmp")] if usage.is_dir() else []

