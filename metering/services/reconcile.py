"""Provider reconciliation: the provider's own usage report against the ledger, per UTC day x model
(x the provider's project, workspace or key, mapped to a tag or key). The rules are metering.reconcile's."""

from __future__ import annotations

from typing import Any

from metering import reconcile as rc
from metering.services.context import Context
from metering.store import queries
from metering.timewindows import cut, local_midnight, zone


def reconcile(ctx: Context, *, provider: str, report: Any, start: str, end: str, tolerance: str | None = None,
              models: str | None = None, split_by: str | None = None, match_to: str | None = None,
              mapping: list[str] | None = None) -> dict[str, Any]:
    """The provider's usage report (parsed JSON) against the ledger per UTC day x model (x group)."""
    provider = rc.parse_provider(provider)
    start_d, end_d = rc.parse_range(start, end)
    tol = rc.parse_tolerance(tolerance)
    split = rc.parse_split(provider, split_by, match_to, mapping)
    model_set = rc.parse_models(models)
    parsed = rc.parse_report(report, provider, split=split)
    utc = zone("UTC")
    buckets = cut(local_midnight(start_d, utc), local_midnight(end_d, utc), "day", utc)
    group_by = queries.GroupBy.parse(f"model,{split.ledger_field}" if split else "model")
    with ctx.store.reading(timeout=ctx.settings.query_timeout) as cur:
        rows = queries.usage(cur, buckets=buckets, group_by=group_by, api_key_id=None)
    cells = [rc.LedgerCell(day=buckets[row.bucket][0].date(), model=row.group["model"],
                           group=row.group[split.ledger_field] if split else None, counts=row.counts)
             for row in rows]
    return rc.compare(parsed, cells, ctx.store.card, start=start_d, end=end_d, tolerance=tol, models=model_set,
                      split=split)
