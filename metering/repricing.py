"""Re-rating: apply the rate card as it is now to the records in a range.

Prices unpriced records (a model priced later) and applies versions added with an earlier
`effective_from`. The pricing is the same integer arithmetic as `pricing.py`, done in SQL over
the whole range at once; the unit prices themselves come from `pricing.unit_prices`, and a
test checks that both give the same cost on random records.

A dry run reports the change per key and model and writes nothing. An applied run updates the
ledger's pricing columns (the usage facts are never touched), the rollup's sums for the
affected 15-minute buckets, and an audit row, in one transaction.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import duckdb

from metering.pricing import to_usd, units_table
from metering.ratecard import RateCard, format_decimal
from metering.store.db import naive_utc
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


def _money(pico: Any) -> str:
    return format_decimal(to_usd(int(pico or 0)))


def preview(cur: duckdb.DuckDBPyConnection, card: RateCard, *, start: datetime, end: datetime) -> dict[str, Any]:
    """The change per key and model, and in total; writes nothing."""
    cur.register("rate_units", units_table(card))
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
    changes = []
    totals = {"records": 0, "changed": 0, "cost_before": 0, "cost_after": 0, "list_before": 0, "list_after": 0,
              "unpriced_before": 0, "unpriced_after": 0}
    versions: set[int] = set()
    for key, model, n, changed, cb, ca, lb, la, ub, ua, old_v, new_v in rows:
        versions.update(new_v or [])
        changes.append({
            "api_key_id": key, "model": model, "records": n, "changed": changed,
            "cost_before": _money(cb), "cost_after": _money(ca), "cost_delta": _money(int(ca) - int(cb)),
            "list_cost_before": _money(lb), "list_cost_after": _money(la), "list_cost_delta": _money(int(la) - int(lb)),
            "unpriced_before": ub, "unpriced_after": ua, "versions_before": old_v or [], "versions_after": new_v or [],
        })
        for name, value in zip(totals, (n, changed, cb, ca, lb, la, ub, ua), strict=True):
            totals[name] += int(value)
    return {
        "start": start.isoformat().replace("+00:00", "Z"), "end": end.isoformat().replace("+00:00", "Z"),
        "changes": changes,
        "totals": {
            "records": totals["records"], "changed": totals["changed"],
            "cost_before": _money(totals["cost_before"]), "cost_after": _money(totals["cost_after"]),
            "cost_delta": _money(totals["cost_after"] - totals["cost_before"]),
            "list_cost_before": _money(totals["list_before"]), "list_cost_after": _money(totals["list_after"]),
            "list_cost_delta": _money(totals["list_after"] - totals["list_before"]),
            "unpriced_before": totals["unpriced_before"], "unpriced_after": totals["unpriced_after"],
        },
        "versions": sorted(versions),
        "_raw": totals,
    }


_ROLLUP_REFRESH = """
    UPDATE usage_rollup AS r
    SET cost_pico = a.cost, list_cost_pico = a.list_cost, unpriced_requests = a.unpriced
    FROM (
        SELECT time_bucket(INTERVAL 15 MINUTE, occurred_at) AS bucket_start, api_key_id, model,
               coalesce(endpoint, '') AS endpoint,
               coalesce(sum(cost_pico), 0) AS cost, coalesce(sum(list_cost_pico), 0) AS list_cost,
               count(*) FILTER (WHERE rate_version_id IS NULL) AS unpriced
        FROM ledger
        WHERE occurred_at >= $lo AND occurred_at < $hi
        GROUP BY ALL
    ) AS a
    WHERE r.bucket_start = a.bucket_start AND r.api_key_id = a.api_key_id AND r.model = a.model
      AND r.endpoint = a.endpoint
"""


def apply(con: duckdb.DuckDBPyConnection, card: RateCard, *, start: datetime, end: datetime,
          now: datetime) -> dict[str, Any]:
    """Re-rate [start, end) inside the caller's (the writer's) transaction; returns the preview
    of what changed and the audit row's id."""
    result = preview(con, card, start=start, end=end)
    raw = result.pop("_raw")
    params = {"start": naive_utc(start), "end": naive_utc(end)}
    (run_id,) = con.execute("SELECT coalesce(max(id), 0) + 1 FROM reprice_runs").fetchall()[0]
    con.register("rate_units", units_table(card))
    try:
        changes = f"INSERT INTO reprice_changes SELECT $run, request_id FROM ({REPRICED}) WHERE {_CHANGED}"  # noqa: S608
        con.execute(changes, {**params, "run": run_id})  # the rows this run changes, for the lake (metering/lake)
        con.execute(f"""
            UPDATE ledger SET rate_version_id = p.new_version, cost_pico = p.new_cost, list_cost_pico = p.new_list
            FROM ({REPRICED}) AS p
            WHERE ledger.request_id = p.request_id AND ({_CHANGED.replace('old_', 'p.old_').replace('new_', 'p.new_')})
        """, params)  # noqa: S608 (fixed SQL)
    finally:
        con.unregister("rate_units")
    lo = _floor_15(start)
    hi = _floor_15(end) if _floor_15(end) == naive_utc(end) else _floor_15(end) + _FIFTEEN
    con.execute(_ROLLUP_REFRESH, {"lo": lo, "hi": hi})
    con.execute("UPDATE rollup_state SET generation = generation + 1")  # cached sums over the rollup are stale
    con.execute(
        "INSERT INTO reprice_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [run_id, naive_utc(now), naive_utc(start), naive_utc(end), raw["records"], raw["changed"],
         json.dumps(result["versions"]), raw["cost_before"], raw["cost_after"], raw["list_before"],
         raw["list_after"], raw["unpriced_before"], raw["unpriced_after"]],
    )
    result["run_id"] = run_id
    return result


def runs(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    rows = cur.execute("SELECT * FROM reprice_runs ORDER BY id").fetchall()
    names = [d[0] for d in cur.description]
    out = []
    for row in rows:
        item = dict(zip(names, row, strict=True))
        out.append({
            "id": item["id"],
            "applied_at": item["applied_at"].isoformat() + "Z",
            "start": item["range_start"].isoformat() + "Z", "end": item["range_end"].isoformat() + "Z",
            "records_in_range": item["records_in_range"], "records_changed": item["records_changed"],
            "versions": json.loads(item["versions"]),
            "cost_before": _money(item["cost_before_pico"]), "cost_after": _money(item["cost_after_pico"]),
            "list_cost_before": _money(item["list_before_pico"]), "list_cost_after": _money(item["list_after_pico"]),
            "unpriced_before": item["unpriced_before"], "unpriced_after": item["unpriced_after"],
        })
    return out


_FIFTEEN = timedelta(minutes=15)


def _floor_15(ts: datetime) -> datetime:
    naive = naive_utc(ts)
    return naive.replace(minute=naive.minute - naive.minute % 15, second=0, microsecond=0)
