"""Reconciliation's rules and query parameters: providers, classes, tolerance, splits, models."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from fnmatch import fnmatchcase
from typing import Any

from metering.errors import BadRequest

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


