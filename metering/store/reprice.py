"""Re-rating in SQL: the ledger's pricing columns recomputed over a range with a unit-price table
(`metering.pricing.units_table`) by the token classes' cost expression, the rollup's money refreshed,
and the audit trail. The usage facts are never touched."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import duckdb
import pyarrow as pa

from metering.store import rollup, spend
from metering.timewindows import floor_slot, naive_utc
from metering.tokenclasses import sql_cost

REPRICED = f"""
    SELECT l.request_id, l.api_key_id, l.model, l.occurred_at,
           l.rate_version_id AS old_version, l.cost_pico AS old_cost, l.list_cost_pico AS old_list,
           v.version_id AS new_version,
           CASE WHEN v.version_id IS NULL THEN NULL ELSE {sql_cost('cur')}::BIGINT END AS new_cost,
           CASE WHEN v.version_id IS NULL THEN NULL ELSE {sql_cost('list')}::BIGINT END AS new_list
    FROM ledger l
    ASOF LEFT JOIN rate_units v ON l.model = v.model AND l.occurred_at >= v.effective_from
    WHERE l.occurred_at >= $start AND l.occurred_at < $end
"""  # noqa: S608 (fixed SQL: the basis names are constants)
_CHANGED = ("old_version IS DISTINCT FROM new_version OR old_cost IS DISTINCT FROM new_cost "
            "OR old_list IS DISTINCT FROM new_list")
TOTALS = ("records", "changed", "cost_before", "cost_after", "list_before", "list_after", "unpriced_before",
          "unpriced_after")


@dataclass
class Change:
    """The change of one key x model, or of the whole range (money in pico-dollars)."""

    records: int = 0
    changed: int = 0
    cost_before: int = 0
    cost_after: int = 0
    list_before: int = 0
    list_after: int = 0
    unpriced_before: int = 0
    unpriced_after: int = 0
    versions_before: list[int] = field(default_factory=list)
    versions_after: list[int] = field(default_factory=list)

    def add(self, other: Change) -> None:
        for name in TOTALS:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class Preview:
    changes: dict[tuple[str, str], Change]  # (api_key_id, model) -> its change
    totals: Change
    versions: list[int]  # the rate versions in effect after the run


def preview(cur: duckdb.DuckDBPyConnection, units: pa.Table, *, start: datetime, end: datetime) -> Preview:
    """The change per key and model, and in total; writes nothing."""
    cur.register("rate_units", units)
    try:
        rows = cur.execute(f"""
            WITH p AS ({REPRICED})
            SELECT api_key_id, model, count(*) AS records,
                   count(*) FILTER (WHERE {_CHANGED}) AS changed,
                   coalesce(sum(old_cost), 0), coalesce(sum(new_cost), 0),
                   coalesce(sum(old_list), 0), coalesce(sum(new_list), 0),
                   count(*) FILTER (WHERE old_version IS NULL), count(*) FILTER (WHERE new_version IS NULL),
                   list(DISTINCT old_version ORDER BY old_version) FILTER (WHERE old_version IS NOT NULL),
                   list(DISTINCT new_version ORDER BY new_version) FILTER (WHERE new_version IS NOT NULL)
            FROM p GROUP BY ALL ORDER BY ALL
        """, {"start": naive_utc(start), "end": naive_utc(end)}).fetchall()  # noqa: S608 (fixed SQL)
    finally:
        cur.unregister("rate_units")
    changes: dict[tuple[str, str], Change] = {}
    totals = Change()
    versions: set[int] = set()
    for key, model, *figures, old_v, new_v in rows:
        change = Change(*(int(f) for f in figures), versions_before=old_v or [], versions_after=new_v or [])
        changes[(key, model)] = change
        totals.add(change)
        versions.update(new_v or [])
    return Preview(changes, totals, sorted(versions))


_FIFTEEN = timedelta(minutes=15)


def apply(con: duckdb.DuckDBPyConnection, units: pa.Table, *, start: datetime, end: datetime,
          now: datetime) -> tuple[Preview, int]:
    """Re-rate [start, end) inside the caller's transaction (the rollup must be flushed first: the
    refresh recomputes rolled-up cells only); returns the change and the audit row's id."""
    result = preview(con, units, start=start, end=end)
    params = {"start": naive_utc(start), "end": naive_utc(end)}
    (run_id,) = con.execute("SELECT coalesce(max(id), 0) + 1 FROM reprice_runs").fetchall()[0]
    con.register("rate_units", units)
    try:
        # The rows this run changes, so the change can be carried elsewhere (the lake restates them).
        con.execute(f"INSERT INTO reprice_changes SELECT $run, request_id FROM ({REPRICED}) WHERE {_CHANGED}",  # noqa: S608
                    {**params, "run": run_id})
        con.execute(f"""
            UPDATE ledger SET rate_version_id = p.new_version, cost_pico = p.new_cost, list_cost_pico = p.new_list
            FROM ({REPRICED}) AS p
            WHERE ledger.request_id = p.request_id AND ({_CHANGED.replace('old_', 'p.old_').replace('new_', 'p.new_')})
        """, params)  # noqa: S608 (fixed SQL)
    finally:
        con.unregister("rate_units")
    lo = floor_slot(start)
    hi = floor_slot(end) if floor_slot(end) == end else floor_slot(end) + _FIFTEEN
    con.execute(rollup.REFRESH_MONEY, {"lo": naive_utc(lo), "hi": naive_utc(hi)})
    spend.refresh(con, lo=lo, hi=hi)
    con.execute("UPDATE rollup_state SET generation = generation + 1")  # cached sums over the rollup are stale
    t = result.totals
    con.execute(
        "INSERT INTO reprice_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [run_id, naive_utc(now), naive_utc(start), naive_utc(end), t.records, t.changed,
         json.dumps(result.versions), t.cost_before, t.cost_after, t.list_before, t.list_after, t.unpriced_before,
         t.unpriced_after],
    )
    return result, run_id


def runs(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """The audit trail, oldest first: (id, applied_at, range, versions) and the totals in pico-dollars."""
    rows = cur.execute("SELECT * FROM reprice_runs ORDER BY id").fetchall()
    names = [d[0] for d in cur.description]
    out = []
    for row in rows:
        item = dict(zip(names, row, strict=True))
        item["versions"] = json.loads(item["versions"])
        out.append(item)
    return out
