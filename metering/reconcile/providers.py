"""A provider's usage report, read exactly as its admin API returns it, summed per UTC day x model."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from metering.errors import BadRequest, RecordError
from metering.reconcile.params import (
    ALWAYS_REPORTED,
    CLASSES,
    DAY,
    ENDPOINTS,
    HOUR,
    MAX_COUNT,
    MAX_SUM,
    OPENAI_RESULT,
    Split,
    parse_provider,
)
from metering.records import parse_timestamp

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


def iso(ts: datetime) -> str:
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
    raise BadRequest(f"{where}: spans {iso(start)} to {iso(end)}: reconciliation needs buckets of one whole UTC day "
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
            where = f"{page_where}, bucket {b} ({iso(start)})"
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


