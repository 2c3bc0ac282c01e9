"""The provider's cells beside the ledger's, both priced at our rate card; match or drift."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from metering.pricing import CostOverflow, UnitPrices, breakdown, unit_prices, usd_string
from metering.ratecard import RateCard, RateVersion, format_decimal
from metering.reconcile.params import CLASSES, ENDPOINTS, RATIO_PLACES, TOLERANCE_RULE, Models, Split
from metering.reconcile.providers import Report, iso
from metering.records import UsageRecord

# --- the comparison ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LedgerCell:
    """The ledger's sums for one UTC day x model (x group): the CLASSES and thinking_tokens."""

    day: date
    model: str
    group: str | None
    counts: dict[str, int]


def _ratio(numerator: int, denominator: int) -> str | None:
    if denominator == 0:
        return None
    if numerator == 0:
        return "0"
    return format_decimal((Decimal(numerator) / Decimal(denominator)).quantize(RATIO_PLACES, ROUND_HALF_EVEN))


class _Prices:
    """The rate version in effect at the start of each UTC day, per model, and its unit prices (looked up
    once per model and day)."""

    def __init__(self, card: RateCard) -> None:
        self.card = card
        self.cache: dict[tuple[str, date], tuple[RateVersion, UnitPrices] | None] = {}

    def at(self, model: str, day: date) -> tuple[RateVersion, UnitPrices] | None:
        key = (model, day)
        if key not in self.cache:
            version = self.card.version_at(model, datetime(day.year, day.month, day.day, tzinfo=UTC))
            self.cache[key] = (version, unit_prices(version, "current")) if version is not None else None
        return self.cache[key]


def _cost(quantities: dict[str, int], model: str, day: date,
          prices: _Prices) -> tuple[int | None, RateVersion | None, str | None]:
    """Pico-dollars at the version in effect at the day's start: (cost, version, note)."""
    found = prices.at(model, day)
    if found is None:
        return None, None, f"{model} has no price on our rate card on {day}: costs are null"
    version, unit = found
    record = UsageRecord(
        request_id="reconcile", occurred_at=version.effective_from, api_key_id="-", model=model, endpoint=None,
        input_tokens=quantities["input_tokens"], cached_tokens=quantities["cached_tokens"],
        cache_write_tokens=quantities["cache_write_tokens"], output_tokens=quantities["output_tokens"],
        thinking_tokens=quantities["thinking_tokens"], web_search_requests=quantities["web_search_requests"], tags=None)
    try:
        return breakdown(record, unit).total, version, None
    except CostOverflow:
        return None, version, f"the cost of {model} on {day} is beyond the supported range: costs are null"


def _priced_provider_quantities(provider: dict[str, int] | None, ledger: dict[str, int],
                                reported: set[str]) -> dict[str, int]:
    """What the provider's side is priced on: its own counts, and the ledger's for classes it does not
    report (cache writes capped so uncached input stays >= 0) and for the reasoning share of output."""
    counts = provider or dict.fromkeys(CLASSES, 0)
    out = {name: counts[name] if name in reported else ledger[name] for name in CLASSES}
    if "cache_write_tokens" not in reported:
        out["cache_write_tokens"] = min(ledger["cache_write_tokens"], max(out["input_tokens"] - out["cached_tokens"], 0))
    out["thinking_tokens"] = min(ledger["thinking_tokens"], out["output_tokens"])
    return out


def _status(provider: dict[str, int] | None, ledger: dict[str, int] | None, reported: set[str], tolerance: Decimal,
            coverage: int, provider_name: str) -> list[str]:
    reasons = []
    if coverage < 24:
        reasons.append(f"the {provider_name} report does not cover this day" if coverage == 0 else
                       f"the {provider_name} report covers only {coverage} of the 24 hours of this day")
    if ledger is None:
        reasons.append("not in the ledger")
    elif provider is None:
        if coverage:
            reasons.append(f"not in the {provider_name} report")
    else:
        for name in CLASSES:
            if name not in reported:
                continue
            p, q = provider[name], ledger[name]
            if abs(p - q) > tolerance * q:  # q == 0: any difference drifts
                reasons.append(f"{name}: {provider_name} {p}, ledger {q} ({p - q:+d})")
    return reasons


def compare(report: Report, ledger: Iterable[LedgerCell], card: RateCard, *, start: date, end: date,
            tolerance: Decimal = Decimal(0), models: Models | None = None,
            split: Split | None = None) -> dict[str, Any]:
    """Rows per UTC day x model (x group) of [start, end), and a summary."""
    ledger_cells = {(c.day, c.model, c.group): c.counts for c in ledger
                    if start <= c.day < end and (models is None or c.model in models)}
    provider_cells = {cell: counts for cell, counts in report.cells.items()
                      if start <= cell[0] < end and (models is None or cell[1] in models)}
    outside = sorted({cell[0] for cell in report.cells if not start <= cell[0] < end})
    reported = report.reported
    name = report.provider
    rows: list[dict[str, Any]] = []
    totals = {"provider": 0, "ledger": 0}
    unpriced: set[str] = set()
    prices = _Prices(card)
    zero_ledger = dict.fromkeys((*CLASSES, "thinking_tokens"), 0)
    for cell in sorted(set(ledger_cells) | set(provider_cells), key=lambda c: (c[0], c[1], c[2] or "")):
        day, model, group = cell
        provider, ours = provider_cells.get(cell), ledger_cells.get(cell)
        base = ours or zero_ledger
        coverage = len(report.hours.get(day, ()))
        reasons = _status(provider, ours, reported, tolerance, coverage, name)
        provider_cost, version, note = _cost(_priced_provider_quantities(provider, base, reported), model, day, prices)
        ledger_cost = _cost(base, model, day, prices)[0] if note is None else None
        notes = [note] if note else []
        if note and version is None:
            unpriced.add(model)
        if split is not None and split.mapping and provider is not None:
            unmapped = sorted(i for i in report.provider_ids.get(cell, ()) if i not in split.mapping)
            if unmapped:
                notes.append(f"{split.provider_field} {', '.join(unmapped)} has no entry in the map")
        diff = {n: (provider or zero_ledger)[n] - base[n] if n in reported else None for n in CLASSES}
        row: dict[str, Any] = {"date": day.isoformat(), "model": model}
        if split is not None:
            row["group"] = group
            row["provider_ids"] = sorted(report.provider_ids.get(cell, ()))
        row.update({
            "status": "drift" if reasons else "match",
            "reasons": reasons,
            "notes": notes,
            "provider": {n: (provider or zero_ledger)[n] if n in reported else None for n in CLASSES},
            "ledger": {n: base[n] for n in (*CLASSES, "thinking_tokens")},
            "difference": diff,
            "relative_difference": {n: _ratio(d, base[n]) if d is not None else None for n, d in diff.items()},
            "rate_version_id": version.id if version else None,
            "rate_effective_from": iso(version.effective_from) if version else None,
            "provider_cost": usd_string(provider_cost) if provider_cost is not None else None,
            "ledger_cost": usd_string(ledger_cost) if ledger_cost is not None else None,
            "cost_difference": None,
            "cost_relative_difference": None,
        })
        if provider_cost is not None and ledger_cost is not None:
            totals["provider"] += provider_cost
            totals["ledger"] += ledger_cost
            row["cost_difference"] = usd_string(provider_cost - ledger_cost)
            row["cost_relative_difference"] = _ratio(provider_cost - ledger_cost, ledger_cost)
        rows.append(row)
    days = [start + timedelta(days=i) for i in range((end - start).days)]
    drifted = sum(r["status"] == "drift" for r in rows)
    summary = {
        "provider": name,
        "source": ENDPOINTS[name],
        "start": start.isoformat(),
        "end": end.isoformat(),
        "tz": "UTC",
        "currency": "USD",
        "tolerance": format_decimal(tolerance),
        "tolerance_rule": TOLERANCE_RULE,
        "split": split.as_json() if split else None,
        "models": list(models.patterns) if models else None,
        "rows": len(rows),
        "match": len(rows) - drifted,
        "drift": drifted,
        "status": "drift" if drifted else "match",
        "provider_cost": usd_string(totals["provider"]),
        "ledger_cost": usd_string(totals["ledger"]),
        "cost_difference": usd_string(totals["provider"] - totals["ledger"]),
        "cost_rule": ("both sides priced per class at the rate version in effect at the start of each UTC day; classes "
                      "the report does not carry and the reasoning share of output are priced with the ledger's "
                      "quantities on both sides; unpriced rows are left out of the cost totals"),
        "unpriced_models": sorted(unpriced),
        "not_reported": [n for n in CLASSES if n not in reported],
        "days_not_covered": [d.isoformat() for d in days if not report.hours.get(d)],
        "days_partially_covered": [d.isoformat() for d in days if 0 < len(report.hours.get(d, ())) < 24],
        "days_outside_range": [d.isoformat() for d in outside],
        "pages": report.pages,
        "buckets": report.buckets,
        "complete": report.complete,
    }
    if not report.complete:
        summary["warning"] = "the last page says has_more: true; the report continues beyond the pages given"
    return {"rows": rows, "summary": summary}


