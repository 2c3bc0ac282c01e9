"""The per-key usage API (usage and cost per time bucket and group), one stored record with its
cost per token class, and the models the rate card does not price."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from metering.access import Principal
from metering.errors import NotFound
from metering.pricing import price_record, usd_string
from metering.ratecard import format_decimal
from metering.records import UsageRecord
from metering.services.context import Context
from metering.store import queries
from metering.timewindows import cut, default_range, parse_bound, zone


def _money(cost: int, list_cost: int, counts: dict[str, int]) -> dict[str, str | None]:
    """Cost and list cost as JSON money; null (unknown, not zero) when every request is unpriced. With
    some requests priced, the cost of those, and `unpriced_requests` says how many are not in it."""
    if counts["requests"] and counts["unpriced_requests"] == counts["requests"]:
        return {"cost": None, "list_cost": None}
    return {"cost": usd_string(cost), "list_cost": usd_string(list_cost)}


def usage(ctx: Context, *, principal: Principal, start: str | None = None, end: str | None = None,
          bucket: str = "day", group_by: str | None = None, tz: str = "UTC",
          api_key_id: str | None = None) -> dict[str, Any]:
    """Sums per local bucket and group; a key always sees itself alone."""
    key_filter = principal.visible_key(api_key_id)
    zone_info = zone(tz)
    default_start, default_end = default_range(ctx.now(), zone_info)
    start_at = parse_bound(start, zone_info, "start") if start else default_start
    end_at = parse_bound(end, zone_info, "end") if end else default_end
    buckets = cut(start_at, end_at, bucket, zone_info)
    groups = queries.GroupBy.parse(group_by)
    with ctx.store.reading(timeout=ctx.settings.query_timeout) as cur:
        rows = queries.usage(cur, buckets=buckets, group_by=groups, api_key_id=key_filter)

    results: list[list[dict[str, Any]]] = [[] for _ in buckets]
    totals = dict.fromkeys(queries.COUNT_FIELDS, 0)
    total_cost = total_list = 0
    for row in rows:
        results[row.bucket].append({**row.group, **row.counts, **_money(row.cost_pico, row.list_cost_pico, row.counts)})
        for name, value in row.counts.items():
            totals[name] += value
        total_cost += row.cost_pico
        total_list += row.list_cost_pico
    return {
        "currency": "USD",
        "tz": tz,
        "bucket": bucket,
        "group_by": list(groups.fields),
        "buckets": [
            {"start": b_start.astimezone(zone_info).isoformat(), "end": b_end.astimezone(zone_info).isoformat(),
             "results": results[i]}
            for i, (b_start, b_end) in enumerate(buckets)
        ],
        "totals": {**totals, **_money(total_cost, total_list, totals)},
    }


def record(ctx: Context, *, request_id: str, principal: Principal) -> dict[str, Any]:
    """One stored record, the rate version that priced it, and its cost and list cost per class."""
    with ctx.store.reading() as cur:
        row = queries.record(cur, request_id)
    if row is None:
        raise NotFound(f"no record with request_id {request_id[:200]!r}")
    principal.visible_key(row["api_key_id"])  # a key may read only its own records (403 otherwise)
    occurred_at = _instant(row["occurred_at"])
    out: dict[str, Any] = {"record": None, "received_at": _iso(_instant(row["received_at"])), "currency": "USD",
                           "rate_version": None, "cost": None, "list_cost": None}
    rec = UsageRecord(
        request_id=row["request_id"], occurred_at=occurred_at or datetime.min.replace(tzinfo=UTC),
        api_key_id=row["api_key_id"], model=row["model"], endpoint=row["endpoint"],
        input_tokens=row["input_tokens"], cached_tokens=row["cached_tokens"],
        cache_write_tokens=row["cache_write_tokens"], output_tokens=row["output_tokens"],
        thinking_tokens=row["thinking_tokens"], web_search_requests=row["web_search_requests"],
        tags=dict(row["tags"]) if row["tags"] else None,
    )
    out["record"] = rec.to_canonical()
    out["record"]["occurred_at"] = _iso(occurred_at) if occurred_at else row["occurred_text"]
    version = ctx.store.card.version_by_id(row["rate_version_id"]) if row["rate_version_id"] is not None else None
    if version is not None:
        priced = price_record(rec, version)
        out["rate_version"] = version.as_json()
        for name, breakdown in (("cost", priced.cost), ("list_cost", priced.list_cost)):
            out[name] = {part: format_decimal(amount) for part, amount in breakdown.as_usd().items()}
    return out


def _instant(value: Any) -> datetime | None:
    """A stored timestamp as an aware UTC datetime; None for one Python cannot hold (a legacy row)."""
    return value.replace(tzinfo=UTC) if isinstance(value, datetime) else None


def _iso(ts: datetime | None) -> str | None:
    return ts.isoformat().replace("+00:00", "Z") if ts else None


def unpriced(ctx: Context) -> dict[str, Any]:
    """Models with unpriced usage. A model id that the card prices now (a model priced later, or an
    alias added later) is listed until a re-rating prices its stored records: `priced_as` says so."""
    with ctx.store.reading() as cur:
        models = queries.unpriced(cur)
    card = ctx.store.card
    for entry in models:
        entry["priced_as"] = card.model_of(entry["model"]) if card.model_of(entry["model"]) in card.versions else None
    return {"data": models, "total_requests": sum(m["requests"] for m in models)}
