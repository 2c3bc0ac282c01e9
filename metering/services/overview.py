"""The overview: what a period cost, where the money went, and where the month is heading. Every
figure is computed here, exactly, so the dashboard shows money and never prices anything.

- `totals`: requests, tokens, cost, list cost, savings against list, over [start, end);
- `by_class`: the cost (and list cost) of each token class, in dollars, priced with the rate version
  that priced each record, and `cache_savings`: what the cached tokens would have cost at the uncached
  input price minus what they cost;
- `daily`: spend per local day (stacked by model), `top_models`, `top_keys` (admin: every key; a key:
  itself);
- `today`, `month_to_date`, `projected_month_end`: the month to date plus the average daily spend of
  the last 7 whole days times the days left (rounded down to the pico-dollar).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from metering.access import Principal
from metering.pricing import BASES, from_usd, unit_prices, usd_string
from metering.services import usage as usage_service
from metering.services.context import Context
from metering.store import queries
from metering.timewindows import local_midnight, next_month, parse_bound, zone
from metering.tokenclasses import CLASS_NAMES

TOP = 10


def _pico(text: str | None) -> int:
    """JSON money -> pico-dollars; null (wholly unpriced) adds nothing."""
    return from_usd(Decimal(text)) if text is not None else 0


def _money(pico: int, requests: int, unpriced: int) -> str | None:
    """null where every request is unpriced (unknown, not free)."""
    return None if requests and unpriced == requests else usd_string(pico)


def overview(ctx: Context, *, principal: Principal, start: str | None = None, end: str | None = None,
             tz: str = "UTC", api_key_id: str | None = None) -> dict[str, Any]:
    key = principal.visible_key(api_key_id)
    zone_info = zone(tz)
    now = ctx.now()
    today = now.astimezone(zone_info).date()
    month_start = local_midnight(today.replace(day=1), zone_info)
    start_at = parse_bound(start, zone_info, "start") if start else month_start
    end_at = parse_bound(end, zone_info, "end") if end else local_midnight(today + timedelta(days=1), zone_info)

    def usage(**kw: Any) -> dict[str, Any]:
        return usage_service.usage(ctx, principal=principal, tz=tz, api_key_id=key, **kw)

    daily = usage(start=start_at.isoformat(), end=end_at.isoformat(), bucket="day", group_by="model")
    by_key = usage(start=start_at.isoformat(), end=end_at.isoformat(), bucket="month", group_by="api_key_id")
    classes = _class_costs(ctx, start_at, end_at, key)

    month_end = local_midnight(next_month(today.replace(day=1)), zone_info)
    tomorrow = local_midnight(today + timedelta(days=1), zone_info)
    recent = usage(start=(local_midnight(today - timedelta(days=7), zone_info)).isoformat(),
                   end=local_midnight(today, zone_info).isoformat(), bucket="day")
    month = usage(start=month_start.isoformat(), end=tomorrow.isoformat(), bucket="day")
    mtd = _pico(month["totals"]["cost"])
    days_left = round((month_end - tomorrow) / timedelta(days=1))
    projected = mtd + _pico(recent["totals"]["cost"]) * days_left // 7

    totals = daily["totals"]
    models: dict[str, dict[str, int]] = {}
    for bucket in daily["buckets"]:
        for row in bucket["results"]:
            entry = models.setdefault(row["model"], {"cost": 0, "requests": 0, "unpriced": 0})
            entry["cost"] += _pico(row["cost"])
            entry["requests"] += row["requests"]
            entry["unpriced"] += row["unpriced_requests"]
    keys = [row for b in by_key["buckets"] for row in b["results"]]
    return {
        "currency": "USD", "tz": tz, "api_key_id": key,
        "start": start_at.astimezone(zone_info).isoformat(), "end": end_at.astimezone(zone_info).isoformat(),
        "totals": {**totals, "savings": None if totals["cost"] is None
                   else usd_string(_pico(totals["list_cost"]) - _pico(totals["cost"]))},
        "by_class": classes,
        "today": usd_string(_pico(month["buckets"][-1]["results"][0]["cost"]) if month["buckets"][-1]["results"] else 0),
        "month_to_date": usd_string(mtd),
        "projected_month_end": usd_string(projected),
        "projection_rule": "month to date + the average daily spend of the last 7 whole days x the days left",
        "daily": [{"date": b["start"][:10], "cost": _money(sum(_pico(r["cost"]) for r in b["results"]),
                                                           sum(r["requests"] for r in b["results"]),
                                                           sum(r["unpriced_requests"] for r in b["results"])),
                   "by_model": {r["model"]: r["cost"] for r in b["results"]}} for b in daily["buckets"]],
        "top_models": [{"model": m, "cost": _money(v["cost"], v["requests"], v["unpriced"]), "requests": v["requests"]}
                       for m, v in sorted(models.items(), key=lambda kv: -kv[1]["cost"])[:TOP]],
        "top_keys": [{"api_key_id": r["api_key_id"], "cost": r["cost"], "requests": r["requests"]}
                     for r in sorted(keys, key=lambda r: -_pico(r["cost"]))[:TOP]],
    }


def _class_costs(ctx: Context, start: datetime, end: datetime, key: str | None) -> dict[str, Any]:
    """Cost per token class in the window, each record's class priced by the version that priced it."""
    card = ctx.store.card
    with ctx.store.reading(timeout=ctx.settings.query_timeout) as cur:
        rows = queries.class_quantities_arrow(cur, buckets=[(start, end)], api_key_id=key).to_pylist()
    cost = {basis: dict.fromkeys(CLASS_NAMES, 0) for basis in BASES}
    quantity = dict.fromkeys(CLASS_NAMES, 0)
    priced = dict.fromkeys(CLASS_NAMES, 0)
    cache_savings = 0
    for row in rows:
        for name in CLASS_NAMES:
            quantity[name] += row[name]
        version = card.version_by_id(row["rate_version_id"]) if row["rate_version_id"] is not None else None
        if version is None:
            continue
        for name in CLASS_NAMES:
            priced[name] += row[name]
        for basis in BASES:
            unit = unit_prices(version, basis)
            for name, price in zip(CLASS_NAMES, unit, strict=True):
                cost[basis][name] += row[name] * price
        unit = unit_prices(version, "current")
        cache_savings += row["cached_input"] * (unit.uncached_input - unit.cached_input)
    return {
        "classes": [{"token_class": name, "quantity": quantity[name],
                     **({"cost": None, "list_cost": None} if quantity[name] and not priced[name] else
                        {"cost": usd_string(cost["current"][name]), "list_cost": usd_string(cost["list"][name])})}
                    for name in CLASS_NAMES],
        "cache_savings": usd_string(cache_savings),
    }
