"""Operations shared by the HTTP API and the CLI's local backend."""

from __future__ import annotations

from typing import Any

from metering import repricing
from metering.errors import BadRequest
from metering.timewindows import parse_bound, zone


def reprice(store: Any, *, start: str, end: str, tz: str = "UTC", dry_run: bool) -> dict[str, Any]:
    """Re-rate [start, end) (dates are local midnights in tz). A dry run writes nothing."""
    zone_info = zone(tz)
    start_at, end_at = parse_bound(start, zone_info, "start"), parse_bound(end, zone_info, "end")
    if end_at <= start_at:
        raise BadRequest("end must be after start")
    if dry_run:
        with store.reading() as cur:
            result = repricing.preview(cur, store.card, start=start_at, end=end_at)
        result.pop("_raw")
        return {"dry_run": True, **result}
    def run(con: Any) -> dict[str, Any]:
        store.writer.flush(con)  # the rollup refresh in apply() recomputes rolled-up cells only
        return repricing.apply(con, store.card, start=start_at, end=end_at, now=store.clock())

    result = store.writer.call(run)
    return {"dry_run": False, **result}


def reprice_runs(store: Any) -> list[dict[str, Any]]:
    with store.reading() as cur:
        return repricing.runs(cur)


def reconcile(store: Any, *, provider: str, report: Any, start: str, end: str, tolerance: str | None = None,
              models: str | None = None, split_by: str | None = None, match_to: str | None = None,
              mapping: list[str] | None = None) -> dict[str, Any]:
    """The provider's usage report (parsed JSON) against the ledger per UTC day x model (x group)."""
    from metering import reconcile as rc
    from metering.store import queries
    from metering.timewindows import cut, local_midnight

    provider = rc.parse_provider(provider)
    start_d, end_d = rc.parse_range(start, end)
    tol = rc.parse_tolerance(tolerance)
    split = rc.parse_split(provider, split_by, match_to, mapping)
    model_set = rc.parse_models(models)
    parsed = rc.parse_report(report, provider, split=split)
    utc = zone("UTC")
    buckets = cut(local_midnight(start_d, utc), local_midnight(end_d, utc), "day", utc)
    group_by = queries.GroupBy.parse(f"model,{split.ledger_field}" if split else "model")
    with store.reading() as cur:
        rows = queries.usage(cur, buckets=buckets, group_by=group_by, api_key_id=None)
    cells = [rc.LedgerCell(day=buckets[row.bucket][0].date(), model=row.group["model"],
                           group=row.group[split.ledger_field] if split else None, counts=row.counts)
             for row in rows]
    return rc.compare(parsed, cells, store.card, start=start_d, end=end_d, tolerance=tol, models=model_set,
                      split=split)
