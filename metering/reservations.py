"""Budget reservations, the rules: what a reservation asks, what it holds, and the admission test.

A gateway asks before a call whether it may make it (`POST /v1/reservations`). The hold is the most
the call can cost at the current price: its maximum input tokens at the uncached input price and its
maximum output tokens at the output price (the token classes of metering.tokenclasses, priced as a
record with those counts and no cache hits or thinking). It is admitted when, for every enforced
budget that covers the key, spent + held + this hold stays within the amount; otherwise nothing is
held. Pure: the caller brings spend, holds and the clock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from metering.budgets import Budget
from metering.errors import BadRequest
from metering.pricing import CostOverflow, breakdown, unit_prices
from metering.ratecard import RateVersion
from metering.records import MAX_STRING, MAX_TOKENS, UsageRecord, check_tags

DEFAULT_TTL = 600
MAX_TTL = 7 * 24 * 3600
FIELDS = frozenset({"request_id", "api_key_id", "model", "max_input_tokens", "max_output_tokens", "ttl_seconds",
                    "tags"})


@dataclass(frozen=True, slots=True)
class Ask:
    """A reservation request, checked."""

    request_id: str
    api_key_id: str
    model: str
    max_input_tokens: int
    max_output_tokens: int
    ttl_seconds: int
    tags: dict[str, str] | None

    def same_call(self, other: Ask) -> bool:
        """A retried reservation: the same call (the ttl may differ)."""
        return (self.api_key_id, self.model, self.max_input_tokens, self.max_output_tokens, self.tags) == (
            other.api_key_id, other.model, other.max_input_tokens, other.max_output_tokens, other.tags)

    def tags_json(self) -> str | None:
        return json.dumps(self.tags, sort_keys=True) if self.tags else None


def _string(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_STRING:
        raise BadRequest(f"{name}: is required, a string of 1 to {MAX_STRING} characters")
    return value


def _count(body: dict[str, Any], name: str, *, default: int | None, upper: int = MAX_TOKENS) -> int:
    value = body.get(name, default)
    if value is None:
        raise BadRequest(f"{name}: is required, a non-negative integer")
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= upper:
        raise BadRequest(f"{name}: must be an integer from 0 to {upper}, got {str(value)[:40]!r}")
    return value


def parse_ask(body: Any) -> Ask:
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object: request_id, api_key_id, model, max_output_tokens, ...")
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise BadRequest(f"{str(unknown[0])[:80]}: unknown field")
    ttl = _count(body, "ttl_seconds", default=DEFAULT_TTL, upper=MAX_TTL)
    if ttl < 1:
        raise BadRequest("ttl_seconds: must be at least 1")
    try:
        tags = check_tags(body.get("tags"))
    except Exception as exc:  # RecordError: the record's own words, as a 400
        raise BadRequest(getattr(exc, "message", str(exc))) from None
    return Ask(request_id=_string(body, "request_id"), api_key_id=_string(body, "api_key_id"),
               model=_string(body, "model"), max_input_tokens=_count(body, "max_input_tokens", default=0),
               max_output_tokens=_count(body, "max_output_tokens", default=None), ttl_seconds=ttl, tags=tags)


@dataclass(frozen=True, slots=True)
class Hold:
    """The most a call can cost, in pico-dollars, at the current and the list price."""

    cost: int
    list_cost: int

    def on(self, basis: str) -> int:
        return self.cost if basis == "cost" else self.list_cost


def hold_for(ask: Ask, version: RateVersion, *, now: datetime) -> Hold:
    """Max input tokens, all uncached, and max output tokens, none of them thinking: priced by the
    same classes as any record."""
    worst = UsageRecord(request_id=ask.request_id, occurred_at=now.astimezone(UTC), api_key_id=ask.api_key_id,
                        model=ask.model, endpoint=None, input_tokens=ask.max_input_tokens, cached_tokens=0,
                        cache_write_tokens=0, output_tokens=ask.max_output_tokens, thinking_tokens=None,
                        web_search_requests=0, tags=ask.tags)
    try:
        return Hold(breakdown(worst, unit_prices(version, "current")).total,
                    breakdown(worst, unit_prices(version, "list")).total)
    except CostOverflow:
        raise BadRequest("max_input_tokens, max_output_tokens: the most this call can cost is beyond the "
                         "supported range") from None


def covers(budget: Budget, *, api_key_id: str, account_id: str, tags: dict[str, str] | None) -> bool:
    """An enforced budget covers a reservation of this key (and these tags)."""
    scope = budget.scope
    if scope.kind == "tag":
        return bool(tags) and tags.get(scope.tag_name or "") == scope.value
    return scope.covers(api_key_id=api_key_id, account_id=account_id)


@dataclass(frozen=True, slots=True)
class Room:
    """One enforced budget at the moment of a decision (pico-dollars on the budget's basis)."""

    budget: Budget
    spent: int
    held: int

    def admits(self, hold: int) -> bool:
        return self.spent + self.held + hold <= self.budget.amount_pico


def expires_at(now: datetime, ttl_seconds: int) -> datetime:
    return now + timedelta(seconds=ttl_seconds)
