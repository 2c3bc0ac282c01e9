"""Provider reconciliation: the upstream provider's own usage report against the ledger.

Pure functions: no I/O, no clock. `parse_report` reads a usage report exactly as the provider's
admin API returns it (one page, or a JSON array of pages) and sums it per UTC day x model (x the
provider's project, workspace or key, mapped to our key or tag, when asked); `compare` sets it
beside the ledger's sums of the same cells and prices both sides at our rate card;
`render_csv` / `render_xlsx` make the answer a document finance can read.

Token classes use the ledger's inclusive semantics (see `metering.records`):
    input_tokens       = uncached input + cached + cache writes
    cached_tokens      = cache reads
    cache_write_tokens = cache writes (all retention periods)
    output_tokens      = all output (reasoning included)
OpenAI's Usage API (`GET /v1/organization/usage/completions`) is inclusive already: `input_tokens`
includes `input_cached_tokens` and the cache-write fields. Anthropic's Admin API usage report
(`GET /v1/organizations/usage_report/messages`) is not: `uncached_input_tokens` excludes
`cache_read_input_tokens` and `cache_creation`, which are added back.

A class the report does not carry (OpenAI's completions usage has no web searches and, before
cache writes were billed, no cache-write fields; Anthropic's report has no request count) is null
on the provider's side, never causes drift, and is priced on the provider's side with the
ledger's quantity, so both costs cover the same classes. Reasoning tokens are not split out of
output by either report: the provider's output is priced with the ledger's reasoning share.

Tolerance: a class drifts when |provider - ledger| > tolerance x ledger (tolerance 0: exact; a
ledger count of 0 against any provider count drifts at every tolerance). A cell present on one
side only always drifts. Costs never decide the status; they say what the drift is worth.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from fnmatch import fnmatchcase
from typing import Any

from metering.errors import BadRequest, RecordError
from metering.pricing import CostOverflow, UnitPrices, breakdown, unit_prices, usd_string
from metering.ratecard import RateCard, RateVersion, format_decimal
from metering.records import UsageRecord, parse_timestamp

PROVIDERS = ("openai", "anthropic")
FORMATS = ("json", "csv", "xlsx")
# The compared classes, in the ledger's names.
CLASSES = ("requests", "input_tokens", "cached_tokens", "cache_write_tokens", "output_tokens", "web_search_requests")
# The provider field a report can be split by, per provider (the report must be grouped by it).
# Classes every page of the provider's report carries (its required fields); the others are reported when a
# result carries their fields (OpenAI's cache writes, Anthropic's web searches).
ALWAYS_REPORTED = {"openai": ("requests", "input_tokens", "cached_tokens", "output_tokens"),
                   "anthropic": ("input_tokens", "cached_tokens", "cache_write_tokens", "output_tokens")}
SPLIT_FIELDS = {"openai": ("project_id", "api_key_id"), "anthropic": ("workspace_id", "api_key_id")}
ENDPOINTS = {
    "openai": "GET /v1/organization/usage/completions",
    "anthropic": "GET /v1/organizations/usage_report/messages",
}
OPENAI_RESULT = "organization.usage.completions.result"
MIN_DATE, MAX_DATE = date(2000, 1, 1), date(2100, 1, 1)
TAG_NAME = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")  # as the usage API's group_by=tag:NAME
MAX_TOLERANCE = Decimal(1)
DAY, HOUR = 86_400, 3_600
RATIO_PLACES = Decimal("0.000000001")
MAX_COUNT = 10**13  # per result and field: far above any real day, and sums stay within 64-bit JSON integers
MAX_SUM = 2**62
TOLERANCE_RULE = ("a class drifts when |provider - ledger| > tolerance x ledger; a cell on one side only, or a day "
                  "the report covers only in part, always drifts; costs do not decide the status")


# --- query parameters --------------------------------------------------------------------------------


def parse_day(value: Any, name: str) -> date:
    """A date parameter, YYYY-MM-DD, within [2000-01-01, 2100-01-01]."""
    try:
        day = date.fromisoformat(value) if isinstance(value, str) and len(value) == 10 else None
    except ValueError:
        day = None
    if day is None:
        raise BadRequest(f"{name}: not a date (YYYY-MM-DD): {value!r}")
    if not MIN_DATE <= day <= MAX_DATE:
        raise BadRequest(f"{name}: must be between {MIN_DATE} and {MAX_DATE}, got {value}")
    return day


def parse_range(start: Any, end: Any) -> tuple[date, date]:
    start_d, end_d = parse_day(start, "start"), parse_day(end, "end")
    if end_d <= start_d:
        raise BadRequest(f"end ({end_d}) must be after start ({start_d}); the range is [start, end) in UTC days")
    return start_d, end_d


def parse_tolerance(value: Any) -> Decimal:
    if value is None or value == "":
        return Decimal(0)
    try:
        tolerance = Decimal(str(value).strip())
    except InvalidOperation:
        tolerance = None
    if tolerance is None or not tolerance.is_finite() or not 0 <= tolerance <= MAX_TOLERANCE:
        raise BadRequest(f"tolerance: must be a fraction from 0 to 1 such as 0.001 (0.1%), got {value!r}")
    return tolerance


def parse_provider(value: Any) -> str:
    if value not in PROVIDERS:
        raise BadRequest(f"provider: must be one of {', '.join(PROVIDERS)}, got {value!r}")
    return value


def parse_format(value: Any) -> str:
    if value not in FORMATS:
        raise BadRequest(f"format: must be one of {', '.join(FORMATS)}, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Split:
    """Reconcile per provider group too: `provider_field` of the report (it must be grouped by it)
    against `ledger_field` of the ledger (api_key_id or tag:NAME), the provider's ids mapped to our
    values by `mapping` (an id not in it is compared as it is)."""

    provider_field: str
    ledger_field: str
    mapping: dict[str, str]

    def as_json(self) -> dict[str, Any]:
        return {"provider_field": self.provider_field, "ledger_field": self.ledger_field, "mapping": self.mapping}


def parse_split(provider: str, split_by: str | None, match_to: str | None, mapping: Iterable[str] | None) -> Split | None:
    """split_by: the provider's field; match_to: api_key_id or tag:NAME; mapping: ID=VALUE items,
    each possibly a comma list."""
    pairs = [p.strip() for item in (mapping or ()) for p in item.split(",") if p.strip()]
    if not split_by:
        if match_to or pairs:
            raise BadRequest("split_by: is required with match_to or map (the provider field to split by: "
                             f"{' or '.join(SPLIT_FIELDS[provider])})")
        return None
    if split_by not in SPLIT_FIELDS[provider]:
        raise BadRequest(f"split_by: a {provider} report can be split by {' or '.join(SPLIT_FIELDS[provider])}, "
                         f"got {split_by!r}")
    ledger_field = match_to or "api_key_id"
    if ledger_field != "api_key_id" and not (ledger_field.startswith("tag:") and TAG_NAME.match(ledger_field[4:])):
        raise BadRequest(f"match_to: must be api_key_id or tag:NAME (NAME of letters, digits and _.:-), "
                         f"got {ledger_field!r}")
    table: dict[str, str] = {}
    for pair in pairs:
        provider_id, sep, ours = pair.partition("=")
        if not sep or not provider_id.strip() or not ours.strip():
            raise BadRequest(f"map: expected PROVIDER_ID=OUR_VALUE, got {pair!r}")
        if provider_id.strip() in table:
            raise BadRequest(f"map: {provider_id.strip()!r} is mapped twice")
        table[provider_id.strip()] = ours.strip()
    return Split(split_by, ledger_field, table)


@dataclass(frozen=True, slots=True)
class Models:
    """The models to compare: names or shell-style patterns (`gpt-*`)."""

    patterns: tuple[str, ...]

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and any(fnmatchcase(model, p) for p in self.patterns)


def parse_models(value: str | Iterable[str] | None) -> Models | None:
    items = [value] if isinstance(value, str) else list(value or ())
    patterns = tuple(dict.fromkeys(m.strip() for item in items for m in item.split(",") if m.strip()))
    return Models(patterns) if patterns else None


# --- the provider's report ---------------------------------------------------------------------------

Cell = tuple[date, str, str | None]  # UTC day, model, our group value (None: not split)


@dataclass
class Report:
    provider: str
    cells: dict[Cell, dict[str, int]] = field(default_factory=dict)
    provider_ids: dict[Cell, set[str]] = field(default_factory=dict)  # the provider's ids behind a cell's group
    hours: dict[date, set[int]] = field(default_factory=dict)  # hours of each UTC day the report covers
    reported: set[str] = field(default_factory=set)  # classes the report carries
    pages: int = 0
    buckets: int = 0
    complete: bool = True  # False: the last page says has_more

    def add(self, cell: Cell, counts: dict[str, int], provider_id: str | None, where: str) -> None:
        sums = self.cells.setdefault(cell, dict.fromkeys(CLASSES, 0))
        for name, value in counts.items():
            sums[name] += value
            if sums[name] > MAX_SUM:
                raise BadRequest(f"{where}: {name}: the day's sum for {cell[1]} passes {MAX_SUM:,}, beyond any real "
                                 "usage report")
        if provider_id is not None:
            self.provider_ids.setdefault(cell, set()).add(provider_id)


def _type_name(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "object"}.get(type(value), type(value).__name__) if value is not None else "null"


def _count(obj: dict[str, Any], name: str, where: str, *, required: bool = False) -> int | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise BadRequest(f"{where}: {name}: is required")
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{where}: {name}: must be a non-negative integer, got {_type_name(value)} {value!r}")
    if value < 0:
        raise BadRequest(f"{where}: {name}: must be a non-negative integer, got {value}")
    if value > MAX_COUNT:
        raise BadRequest(f"{where}: {name}: must be at most {MAX_COUNT:,}, got {value}")
    return value


def _object(obj: dict[str, Any], name: str, where: str) -> dict[str, Any]:
    value = obj.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{where}: {name}: must be an object, got {_type_name(value)}")
    return value


def _iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def pages_of(body: Any) -> list[Any]:
    """The report's pages: one page (an object) or a JSON array of pages."""
    if isinstance(body, dict):
        return [body]
    if isinstance(body, list):
        if not body:
            raise BadRequest("the report is an empty array: give one page or an array of pages")
        return body
    raise BadRequest(f"the report must be a page (a JSON object) or an array of pages, got {_type_name(body)}")


def _page_data(page: Any, provider: str, where: str) -> list[Any]:
    endpoint = ENDPOINTS[provider]
    if not isinstance(page, dict):
        raise BadRequest(f"{where}: must be a page of {endpoint} (a JSON object), got {_type_name(page)}")
    data = page.get("data")
    if not isinstance(data, list):
        raise BadRequest(f"{where}: not a page of {endpoint}: it has no `data` array of buckets")
    first = next((b for b in data if isinstance(b, dict)), {})
    if provider == "openai" and ("starting_at" in first or "ending_at" in first):
        raise BadRequest(f"{where}: this is an Anthropic usage report (its buckets have starting_at); "
                         "use provider=anthropic")
    if provider == "anthropic" and ("start_time" in first or page.get("object") == "page"):
        raise BadRequest(f"{where}: this is an OpenAI usage page (object \"page\", buckets with start_time); "
                         "use provider=openai")
    if provider == "openai" and page.get("object") != "page":
        raise BadRequest(f"{where}: not a page of {endpoint}: `object` must be \"page\", got {page.get('object')!r}")
    return data


def _bucket_span(bucket: dict[str, Any], provider: str, where: str) -> tuple[datetime, datetime]:
    if provider == "openai":
        if bucket.get("object", "bucket") != "bucket":
            raise BadRequest(f"{where}: `object` must be \"bucket\", got {bucket.get('object')!r}")
        bounds = []
        for name in ("start_time", "end_time"):
            value = bucket.get(name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise BadRequest(f"{where}: {name}: must be a Unix time in seconds, got {_type_name(value)} {value!r}")
            try:
                bounds.append(datetime.fromtimestamp(value, UTC))
            except (OverflowError, OSError, ValueError):
                raise BadRequest(f"{where}: {name}: {value} is not a usable Unix time") from None
        return bounds[0], bounds[1]
    try:
        return (parse_timestamp(bucket.get("starting_at"), "starting_at"),
                parse_timestamp(bucket.get("ending_at"), "ending_at"))
    except RecordError as exc:
        raise BadRequest(f"{where}: {exc.message}") from None


def _hours_of(start: datetime, end: datetime, where: str) -> tuple[date, range]:
    """The UTC day and the hours of it a bucket covers; a bucket must be one whole UTC day or hour."""
    seconds = (end - start).total_seconds()
    epoch = start.timestamp()
    if seconds in (DAY, HOUR) and epoch % seconds == 0:
        first = int(epoch % DAY) // HOUR
        return start.date(), range(first, first + int(seconds) // HOUR)
    raise BadRequest(f"{where}: spans {_iso(start)} to {_iso(end)}: reconciliation needs buckets of one whole UTC day "
                     "(bucket_width=1d) or one whole UTC hour (bucket_width=1h, summed into days)")


def _openai_counts(result: dict[str, Any], where: str, reported: set[str]) -> dict[str, int]:
    if result.get("object", OPENAI_RESULT) != OPENAI_RESULT:
        raise BadRequest(f"{where}: `object` is {result.get('object')!r}: reconciliation reads the completions usage "
                         f"({ENDPOINTS['openai']}), whose results are {OPENAI_RESULT!r}")
    input_tokens = _count(result, "input_tokens", where, required=True) or 0
    cached = _count(result, "input_cached_tokens", where) or 0
    writes = [_count(result, name, where) for name in ("input_cache_write_tokens", "input_cache_write_12h_tokens")]
    counts = {
        "requests": _count(result, "num_model_requests", where, required=True) or 0,
        "input_tokens": input_tokens,
        "cached_tokens": cached,
        "output_tokens": _count(result, "output_tokens", where, required=True) or 0,
    }
    if any(w is not None for w in writes):
        counts["cache_write_tokens"] = sum(w or 0 for w in writes)
        reported.add("cache_write_tokens")
    if cached + counts.get("cache_write_tokens", 0) > input_tokens:
        raise BadRequest(f"{where}: input_cached_tokens ({cached}) and the cache-write tokens "
                         f"({counts.get('cache_write_tokens', 0)}) exceed input_tokens ({input_tokens}), which "
                         "includes them")
    return counts


def _anthropic_counts(result: dict[str, Any], where: str, reported: set[str]) -> dict[str, int]:
    uncached = _count(result, "uncached_input_tokens", where, required=True) or 0
    reads = _count(result, "cache_read_input_tokens", where) or 0
    creation = _object(result, "cache_creation", where)
    writes = sum(_count(creation, name, f"{where}: cache_creation") or 0
                 for name in ("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens"))
    counts = {
        "input_tokens": uncached + reads + writes,
        "cached_tokens": reads,
        "cache_write_tokens": writes,
        "output_tokens": _count(result, "output_tokens", where, required=True) or 0,
    }
    searches = _count(_object(result, "server_tool_use", where), "web_search_requests", f"{where}: server_tool_use")
    if searches is not None:
        counts["web_search_requests"] = searches
        reported.add("web_search_requests")
    return counts


def parse_report(body: Any, provider: str, *, split: Split | None = None) -> Report:
    """The provider's usage report -> sums per UTC day x model (x our group value). Bad input raises
    BadRequest naming the page, the bucket, the result and the field."""
    provider = parse_provider(provider)
    pages = pages_of(body)
    report = Report(provider=provider, pages=len(pages), reported=set(ALWAYS_REPORTED[provider]))
    seen: dict[tuple[date, int], str] = {}  # covered hour -> the bucket that covered it
    counter = _openai_counts if provider == "openai" else _anthropic_counts
    for p, page in enumerate(pages, start=1):
        page_where = f"page {p}"
        data = _page_data(page, provider, page_where)
        for b, bucket in enumerate(data, start=1):
            where = f"{page_where}, bucket {b}"
            if not isinstance(bucket, dict):
                raise BadRequest(f"{where}: must be a bucket object, got {_type_name(bucket)}")
            start, end = _bucket_span(bucket, provider, where)
            day, hours = _hours_of(start, end, where)
            where = f"{page_where}, bucket {b} ({_iso(start)})"
            for hour in hours:
                if (day, hour) in seen:
                    raise BadRequest(f"{where}: overlaps {seen[(day, hour)]}: a report must give each span once")
                seen[(day, hour)] = where
            report.hours.setdefault(day, set()).update(hours)
            report.buckets += 1
            results = bucket.get("results")
            if not isinstance(results, list):
                raise BadRequest(f"{where}: results: must be an array, got {_type_name(results)}")
            for r, result in enumerate(results, start=1):
                r_where = f"{where}, result {r}"
                if not isinstance(result, dict):
                    raise BadRequest(f"{r_where}: must be an object, got {_type_name(result)}")
                model = result.get("model")
                if not isinstance(model, str) or not model:
                    raise BadRequest(f"{r_where}: model: is {_type_name(model)}: reconciliation compares per model; "
                                     "ask the provider for the report with group_by=model")
                counts = counter(result, r_where, report.reported)
                group = provider_id = None
                if split is not None:
                    provider_id = result.get(split.provider_field)
                    if not isinstance(provider_id, str) or not provider_id:
                        raise BadRequest(f"{r_where}: {split.provider_field}: is {_type_name(provider_id)}: the report "
                                         f"is not grouped by it; ask the provider with group_by={split.provider_field}")
                    group = split.mapping.get(provider_id, provider_id)
                report.add((day, model, group), counts, provider_id, r_where)
        has_more = page.get("has_more")
        if has_more is not None and not isinstance(has_more, bool):
            raise BadRequest(f"{page_where}: has_more: must be a boolean, got {_type_name(has_more)}")
        report.complete = not has_more
    return report


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
            "rate_effective_from": _iso(version.effective_from) if version else None,
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


# --- documents ---------------------------------------------------------------------------------------


def flat_rows(result: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """One flat row per compared cell, for CSV and XLSX: columns in a fixed order."""
    split = result["summary"]["split"] is not None
    columns = ["date", "model", *(["group", "provider_ids"] if split else []), "status"]
    for n in CLASSES:
        columns += [f"provider_{n}", f"ledger_{n}", f"difference_{n}", f"relative_difference_{n}"]
    columns += ["ledger_thinking_tokens", "rate_version_id", "rate_effective_from", "provider_cost", "ledger_cost",
                "cost_difference", "cost_relative_difference", "reasons", "notes"]
    out = []
    for row in result["rows"]:
        flat: dict[str, Any] = {"date": row["date"], "model": row["model"], "status": row["status"]}
        if split:
            flat["group"] = row["group"]
            flat["provider_ids"] = " ".join(row["provider_ids"])
        for n in CLASSES:
            flat[f"provider_{n}"] = row["provider"][n]
            flat[f"ledger_{n}"] = row["ledger"][n]
            flat[f"difference_{n}"] = row["difference"][n]
            flat[f"relative_difference_{n}"] = row["relative_difference"][n]
        flat["ledger_thinking_tokens"] = row["ledger"]["thinking_tokens"]
        for n in ("rate_version_id", "rate_effective_from", "provider_cost", "ledger_cost", "cost_difference",
                  "cost_relative_difference"):
            flat[n] = row[n]
        flat["reasons"] = "; ".join(row["reasons"])
        flat["notes"] = "; ".join(row["notes"])
        out.append(flat)
    return columns, out


def header_lines(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The document's metadata, label and value, for the top of the CSV and XLSX."""
    split = summary["split"]
    lines = [
        ("document", f"provider usage reconciliation ({summary['provider']}: {summary['source']})"),
        ("period", f"{summary['start']} to {summary['end']} (UTC days, end exclusive)"),
        ("currency", "USD; costs at our rate card, exact to 1e-12 USD (not rounded)"),
        ("tolerance", f"{summary['tolerance']} ({summary['tolerance_rule']})"),
        ("cost rule", summary["cost_rule"]),
        ("result", f"{summary['status']}: {summary['match']} rows match, {summary['drift']} drift"),
        ("provider cost", summary["provider_cost"]),
        ("ledger cost", summary["ledger_cost"]),
        ("cost difference", summary["cost_difference"] + " (provider - ledger)"),
        ("not reported by the provider", ", ".join(summary["not_reported"]) or "-"),
        ("days not covered by the report", ", ".join(summary["days_not_covered"]) or "-"),
        ("unpriced models", ", ".join(summary["unpriced_models"]) or "-"),
        ("report pages", f"{summary['pages']} ({'complete' if summary['complete'] else 'has_more: true on the last'})"),
    ]
    if split:
        mapping = ", ".join(f"{k}={v}" for k, v in split["mapping"].items()) or "identity"
        lines.append(("split", f"{split['provider_field']} -> {split['ledger_field']} (map: {mapping})"))
    if summary["models"]:
        lines.append(("models", ", ".join(summary["models"])))
    return lines


def render_csv(result: dict[str, Any]) -> bytes:
    """`# label: value` metadata lines, then one header line and the rows. Money as exact decimals."""
    import csv

    buffer = io.StringIO()
    for label, value in header_lines(result["summary"]):
        buffer.write(f"# {label}: {value}\n".replace("\r", " "))
    columns, rows = flat_rows(result)
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buffer.getvalue().encode()


MONEY_FORMAT = '"$"#,##0.00####'
COUNT_FORMAT = "#,##0"
_MONEY_COLUMNS = ("provider_cost", "ledger_cost", "cost_difference")


def render_xlsx(result: dict[str, Any]) -> bytes:
    """A workbook: the metadata above, then a filterable table. Text from the data is written as text
    (never a formula or a link); counts as numbers; money as numbers in a currency format (Excel
    keeps binary floats: the exact figures are in the CSV and JSON)."""
    import xlsxwriter

    columns, rows = flat_rows(result)
    buffer = io.BytesIO()
    options = {"in_memory": True, "strings_to_formulas": False, "strings_to_urls": False, "strings_to_numbers": False}
    with xlsxwriter.Workbook(buffer, options) as workbook:
        sheet = workbook.add_worksheet("reconciliation")
        bold = workbook.add_format({"bold": True})
        money = workbook.add_format({"num_format": MONEY_FORMAT})
        count = workbook.add_format({"num_format": COUNT_FORMAT})
        header = header_lines(result["summary"])
        for i, (label, value) in enumerate(header):
            sheet.write_string(i, 0, label, bold)
            sheet.write_string(i, 1, value)
        top = len(header) + 1
        for j, name in enumerate(columns):
            sheet.write_string(top, j, name, bold)
        for i, row in enumerate(rows, start=top + 1):
            for j, name in enumerate(columns):
                value = row.get(name)
                if value is None:
                    continue
                if name in _MONEY_COLUMNS:
                    sheet.write_number(i, j, float(Decimal(value)), money)
                elif isinstance(value, int):
                    sheet.write_number(i, j, value, count)
                else:
                    sheet.write_string(i, j, str(value))
        sheet.autofilter(top, 0, top + len(rows), len(columns) - 1)
        sheet.freeze_panes(top + 1, 2)
        sheet.set_column(0, 0, 14)
        sheet.set_column(1, 1, 28)
        sheet.set_column(2, len(columns) - 1, 16)
    return buffer.getvalue()


MEDIA_TYPES = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


def render(result: dict[str, Any], fmt: str) -> bytes:
    if fmt == "json":
        import orjson

        return orjson.dumps(result)
    if fmt == "csv":
        return render_csv(result)
    if fmt == "xlsx":
        return render_xlsx(result)
    raise BadRequest(f"format: must be one of {', '.join(FORMATS)}, got {fmt!r}")
