"""Re-rating: apply the rate card as it is now to the records in a range.

Prices unpriced records (a model priced later) and applies versions added with an earlier
`effective_from`. A dry run reports the change per key and model and writes nothing. An applied run
updates the ledger's pricing columns (the usage facts are never touched), the rollup's sums for the
affected 15-minute buckets, and an audit row, in one transaction. A range reaching into a closed
billing month is refused (409 `period_closed`): a closed month's figures never change.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from metering.errors import BadRequest
from metering.pricing import usd_string
from metering.services.context import Context
from metering.services.periods import check_reprice
from metering.store import reprice as table
from metering.store.reprice import Change, Preview
from metering.timewindows import parse_bound, zone


def _iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def _change_json(c: Change) -> dict[str, Any]:
    return {
        "records": c.records, "changed": c.changed,
        "cost_before": usd_string(c.cost_before), "cost_after": usd_string(c.cost_after),
        "cost_delta": usd_string(c.cost_after - c.cost_before),
        "list_cost_before": usd_string(c.list_before), "list_cost_after": usd_string(c.list_after),
        "list_cost_delta": usd_string(c.list_after - c.list_before),
        "unpriced_before": c.unpriced_before, "unpriced_after": c.unpriced_after,
    }


def _preview_json(p: Preview, start: datetime, end: datetime) -> dict[str, Any]:
    changes = [{"api_key_id": key, "model": model, **_change_json(c), "versions_before": c.versions_before,
                "versions_after": c.versions_after} for (key, model), c in p.changes.items()]
    return {"start": _iso(start), "end": _iso(end), "changes": changes, "totals": _change_json(p.totals),
            "versions": p.versions}


def reprice(ctx: Context, *, start: str, end: str, tz: str = "UTC", dry_run: bool) -> dict[str, Any]:
    """Re-rate [start, end) (dates are local midnights in tz). A dry run writes nothing."""
    zone_info = zone(tz)
    start_at, end_at = parse_bound(start, zone_info, "start"), parse_bound(end, zone_info, "end")
    if end_at <= start_at:
        raise BadRequest("end: must be after start")
    units = ctx.units()
    if dry_run:
        with ctx.store.reading() as cur:
            check_reprice(cur, ctx, start=start_at, end=end_at)
            result = table.preview(cur, units, start=start_at, end=end_at)
        return {"dry_run": True, **_preview_json(result, start_at, end_at)}

    def run(con: Any) -> tuple[Preview, int]:
        check_reprice(con, ctx, start=start_at, end=end_at)  # in the writer's transaction: no close slips in
        ctx.store.writer.flush(con)  # the rollup refresh recomputes rolled-up cells only
        return table.apply(con, units, start=start_at, end=end_at, now=ctx.now())

    result, run_id = ctx.store.writer.call(run)
    return {"dry_run": False, **_preview_json(result, start_at, end_at), "run_id": run_id}


def runs(ctx: Context) -> list[dict[str, Any]]:
    with ctx.store.reading() as cur:
        rows = table.runs(cur)
    return [{
        "id": r["id"], "applied_at": r["applied_at"].isoformat() + "Z",
        "start": r["range_start"].isoformat() + "Z", "end": r["range_end"].isoformat() + "Z",
        "records_in_range": r["records_in_range"], "records_changed": r["records_changed"],
        "versions": r["versions"],
        "cost_before": usd_string(int(r["cost_before_pico"])), "cost_after": usd_string(int(r["cost_after_pico"])),
        "list_cost_before": usd_string(int(r["list_before_pico"])),
        "list_cost_after": usd_string(int(r["list_after_pico"])),
        "unpriced_before": r["unpriced_before"], "unpriced_after": r["unpriced_after"],
    } for r in rows]
