"""Budgets: periods, spend, projection and which alerts are due. Pure functions on ints
(pico-dollars), datetimes and Polars frames; the store and the clock are the caller's.

The forecast (`project`): the spend still to come in the period is the sum, over the hours
left, of that hour of day's *median* spend over the last 7 days (a diurnal profile, robust to
a one-off spike), added to the spend so far. With less than one day of history it falls back
to the average rate so far. This suits spiky, diurnal LLM traffic: a burst does not make every
later hour look expensive, and the night's quiet hours are not billed at the day's rate.

The anomaly rule (`is_anomaly`): a key's spend today (UTC day) is an anomaly when it is at
least `min_usd` (default 1 USD, so tiny keys stay quiet) and more than 3 times the median of
its daily spend over the previous 14 days (days without traffic count as 0), and more than
the largest of those days; a key needs spend on at least 3 of those days to have a baseline
(a brand-new key is not an anomaly).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from metering.errors import BadRequest
from metering.pricing import from_usd, usd_string
from metering.signing import check_secret, new_secret
from metering.timewindows import local_midnight, next_month, zone
from metering.webhook_urls import check_webhook_url

PERIODS = ("day", "week", "month")
BASES = ("cost", "list_cost")
DEFAULT_THRESHOLDS = (Decimal("0.5"), Decimal("0.8"), Decimal("1.0"))
PROFILE_DAYS = 7
ANOMALY_DAYS = 14
ANOMALY_FACTOR = 3
ANOMALY_MIN_HISTORY_DAYS = 3
MAX_AMOUNT = Decimal(9_000_000)  # budget amounts are stored as BIGINT pico-dollars (at most 9.2 million USD)


def period_bounds(period: str, tz: str, now: datetime) -> tuple[datetime, datetime]:
    """The local period containing `now`: [start, end) in UTC. Weeks start on Monday."""
    zone_info = zone(tz)
    today = now.astimezone(zone_info).date()
    if period == "day":
        first, nxt = today, today + timedelta(days=1)
    elif period == "week":
        first = today - timedelta(days=today.weekday())
        nxt = first + timedelta(days=7)
    elif period == "month":
        first = today.replace(day=1)
        nxt = next_month(first)
    else:
        raise BadRequest(f"period: must be one of {', '.join(PERIODS)}, got {period!r}")
    return local_midnight(first, zone_info), local_midnight(nxt, zone_info)


def project(*, spent: int, now: datetime, period_start: datetime, period_end: datetime,
            hourly: dict[datetime, int]) -> int:
    """Projected spend at the period's end (pico-dollars). `hourly`: spend per UTC hour start, covering
    at least the hours from midnight UTC of the day PROFILE_DAYS before `now`'s hour (missing hours spent
    nothing)."""
    if now >= period_end:
        return spent
    current_hour = now.replace(minute=0, second=0, microsecond=0)
    history_start = current_hour - timedelta(days=PROFILE_DAYS)
    first_seen = min((h for h, v in hourly.items() if v and h >= history_start), default=None)
    if first_seen is None:
        return spent
    if current_hour - first_seen < timedelta(days=1):
        us = timedelta(microseconds=1)
        elapsed = (now - max(period_start, first_seen)) // us
        if elapsed <= 0:
            return spent
        return spent + spent * ((period_end - now) // us) // elapsed  # exact: integers only
    days = min(PROFILE_DAYS, (current_hour - first_seen).days or 1)
    day_starts = [(current_hour - timedelta(days=back)).replace(hour=0) for back in range(1, days + 1)]
    # Twice each hour of day's median, so that it is an integer (a median of integers is n or n + 1/2).
    profile2 = [int(2 * statistics.median(hourly.get(d.replace(hour=h), 0) for d in day_starts)) for h in range(24)]
    # The hours from this one to the period's end: this hour's part still to come, whole days of the
    # profile, then the hours left over; summed exactly (integers over a common denominator).
    hours = -(-(period_end - current_hour) // timedelta(hours=1))
    whole_days, extra = divmod(hours - 1, 24)
    later = whole_days * sum(profile2) + sum(profile2[(current_hour.hour + 1 + i) % 24] for i in range(extra))
    to_come = HOUR_US - (now - current_hour) // timedelta(microseconds=1)
    return spent + (profile2[current_hour.hour] * to_come + later * HOUR_US) // (2 * HOUR_US)


HOUR_US = 3_600_000_000


def due_thresholds(*, amount: int, spent: int, thresholds: Iterable[Decimal], fired: set[str]) -> list[Decimal]:
    """Thresholds reached and not yet fired this period, lowest first."""
    return [t for t in sorted(thresholds) if spent >= t * amount and format_threshold(t) not in fired]


def format_threshold(t: Decimal) -> str:
    text = format(t.normalize(), "f")
    return text if "." in text else text + ".0"


def is_anomaly(*, today: int, previous_days: list[int], min_pico: int) -> bool:
    """`previous_days`: the key's spend on each of the last ANOMALY_DAYS days (0 where none)."""
    if today < min_pico or sum(1 for d in previous_days if d > 0) < ANOMALY_MIN_HISTORY_DAYS:
        return False
    baseline = statistics.median(previous_days)
    return today > ANOMALY_FACTOR * baseline and today > max(previous_days)


@dataclass(frozen=True, slots=True)
class Scope:
    kind: str  # api_key | account | tag | all
    value: str | None = None
    tag_name: str | None = None
    key: str | None = None  # a tag scope narrowed to one key's share of it (never stored)

    @classmethod
    def parse(cls, data: Any) -> Scope:
        if not isinstance(data, dict) or len(data) != 1:
            raise BadRequest('scope: must be one of {"api_key_id": ...}, {"account_id": ...}, '
                             '{"tag": {"name": "value"}}, {"all": true}')
        (key, value), = data.items()
        if key in ("api_key_id", "account_id"):
            if not isinstance(value, str) or not 1 <= len(value) <= 200:
                raise BadRequest(f"scope.{key}: must be a string of 1 to 200 characters")
            return cls("api_key" if key == "api_key_id" else "account", value)
        if key == "tag":
            if not isinstance(value, dict) or len(value) != 1:
                raise BadRequest('scope.tag: must be one {"name": "value"} pair')
            (name, tag_value), = value.items()
            if not isinstance(tag_value, str) or not name or len(name) > 64:
                raise BadRequest("scope.tag: the name must be 1 to 64 characters and the value a string")
            return cls("tag", tag_value, name)
        if key == "all" and value is True:
            return cls("all")
        raise BadRequest(f"scope: unknown scope {key!r} (api_key_id, account_id, tag or all)")

    def as_json(self) -> dict[str, Any]:
        if self.kind == "api_key":
            return {"api_key_id": self.value}
        if self.kind == "account":
            return {"account_id": self.value}
        if self.kind == "tag":
            return {"tag": {self.tag_name: self.value}}
        return {"all": True}

    def covers(self, *, api_key_id: str, account_id: str) -> bool:
        """Does the budget apply to every request of this key? Tag scopes follow tags, not keys: a tag
        budget covers a key's requests that carry the tag (see `Budget.share_of`)."""
        return (self.kind == "all" or (self.kind == "api_key" and self.value == api_key_id)
                or (self.kind == "account" and self.value == account_id))

    def is_key(self, api_key_id: str) -> bool:
        return self.kind == "api_key" and self.value == api_key_id


def utc_hour(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


# --- the budget ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Budget:
    id: str
    scope: Scope
    period: str
    tz: str
    amount_pico: int
    basis: str
    thresholds: tuple[Decimal, ...]
    forecast: bool
    webhook_url: str | None
    webhook_secret: str | None
    webhook_disabled_at: datetime | None
    created_at: datetime
    enforce: bool = False

    def share_of(self, api_key_id: str) -> Budget:
        """The same budget over one key's share of its scope (for `key_spent`)."""
        scope = (replace(self.scope, key=api_key_id) if self.scope.kind == "tag"
                 else Scope("api_key", api_key_id))
        return replace(self, id=f"{self.id}/{api_key_id}", scope=scope)

    def as_json(self, *, view: str = "admin") -> dict[str, Any]:
        """`admin`: everything but the secret. `owner` (a key reading its own budget): everything but
        the webhook. `covering` (a key reading a wider budget that covers it): the budget's terms
        only, no amount and nothing of its webhook."""
        out: dict[str, Any] = {"id": self.id, "scope": self.scope.as_json(), "period": self.period, "tz": self.tz}
        if view != "covering":
            out["amount"] = usd_string(self.amount_pico)
        out["basis"] = self.basis
        out["thresholds"] = [format_threshold(t) for t in self.thresholds]
        out["enforce"] = self.enforce
        if view == "covering":
            return out
        out["forecast"] = self.forecast
        if view == "admin":
            out["webhook_url"] = self.webhook_url
            out["webhook_disabled"] = self.webhook_disabled_at is not None
        out["created_at"] = self.created_at.isoformat().replace("+00:00", "Z")
        return out


BUDGET_FIELDS = frozenset({"scope", "period", "tz", "amount", "basis", "thresholds", "forecast", "webhook_url",
                           "webhook_secret", "enforce"})


def parse_budget(body: Any, *, allow_link_local: bool = False) -> dict[str, Any]:
    """A BudgetCreate body -> the checked values of a Budget; errors name the field."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object describing the budget")
    unknown = sorted(set(body) - BUDGET_FIELDS)
    if unknown:
        raise BadRequest(f"{str(unknown[0])[:80]}: unknown field")
    scope = Scope.parse(body.get("scope"))
    period = body.get("period", "month")
    if period not in PERIODS:
        raise BadRequest(f"period: must be one of {', '.join(PERIODS)}, got {str(period)[:40]!r}")
    tz = body.get("tz", "UTC")
    zone(tz)
    amount_text = body.get("amount")
    try:
        amount = (Decimal(str(amount_text)) if isinstance(amount_text, (str, int)) and not isinstance(amount_text, bool)
                  else None)
    except InvalidOperation:
        amount = None
    if amount is None or not amount.is_finite() or amount <= 0 or amount > MAX_AMOUNT:
        raise BadRequest(f'amount: must be a positive decimal string such as "100.00", at most {MAX_AMOUNT:,} USD, '
                         f'got {str(amount_text)[:40]!r}')
    try:
        amount_pico = from_usd(amount)
    except ValueError:
        raise BadRequest("amount: at most 12 decimal places") from None
    basis = body.get("basis", "cost")
    if basis not in BASES:
        raise BadRequest(f"basis: must be one of {', '.join(BASES)}, got {str(basis)[:40]!r}")
    raw_thresholds = body.get("thresholds", [str(t) for t in DEFAULT_THRESHOLDS])
    if not isinstance(raw_thresholds, list) or not 1 <= len(raw_thresholds) <= 20:
        raise BadRequest("thresholds: must be a list of 1 to 20 fractions, such as [0.5, 0.8, 1.0]")
    thresholds = []
    for i, t in enumerate(raw_thresholds):
        try:
            value = Decimal(str(t)) if isinstance(t, (str, int, float)) and not isinstance(t, bool) else None
        except InvalidOperation:
            value = None
        if value is None or not value.is_finite() or not Decimal(0) < value <= Decimal(10):
            raise BadRequest(f"thresholds[{i}]: must be a fraction above 0 and at most 10, got {str(t)[:40]!r}")
        thresholds.append(value.normalize())
    if len(set(thresholds)) != len(thresholds):
        raise BadRequest("thresholds: must not repeat a value")
    flags = {}
    for name in ("forecast", "enforce"):
        flags[name] = body.get(name, False)
        if not isinstance(flags[name], bool):
            raise BadRequest(f"{name}: must be true or false")
    url = body.get("webhook_url")
    if url is not None:
        check_webhook_url(url, allow_link_local=allow_link_local)
    secret = body.get("webhook_secret")
    if secret is not None:
        check_secret(secret)
    elif url is not None:
        secret = new_secret()
    return {"scope": scope, "period": period, "tz": tz, "amount_pico": amount_pico, "basis": basis,
            "thresholds": tuple(sorted(thresholds)), "forecast": flags["forecast"], "enforce": flags["enforce"],
            "webhook_url": url, "webhook_secret": secret}


# --- status ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Status:
    """A budget in its current period: spend so far, the projection at the period's end, and what
    is held by open reservations; `key_spent`: one key's share of the spend, when asked for a key."""

    budget: Budget
    period_start: datetime
    period_end: datetime
    spent: int
    projected: int
    held: int = 0
    key_spent: int | None = None

    @property
    def exceeded(self) -> bool:
        return self.spent >= self.budget.amount_pico

    def as_json(self, *, view: str = "admin") -> dict[str, Any]:
        """`admin` (and `owner`, a key reading its own budget): every figure. `covering` (a key reading
        a wider budget): the window, the thresholds, `exceeded` and the key's own spend only: no
        figure that depends on another key's usage."""
        b = self.budget
        out: dict[str, Any] = {
            "budget_id": b.id, "scope": b.scope.as_json(), "period": b.period, "tz": b.tz, "basis": b.basis,
            "enforce": b.enforce,
            "period_start": self.period_start.isoformat().replace("+00:00", "Z"),
            "period_end": self.period_end.isoformat().replace("+00:00", "Z"),
            "thresholds": [format_threshold(t) for t in b.thresholds],
        }
        if view != "covering":
            amount = b.amount_pico
            out.update({
                "amount": usd_string(amount), "spent": usd_string(self.spent), "held": usd_string(self.held),
                "remaining": usd_string(max(amount - self.spent - self.held, 0)),
                "fraction": format_fraction(self.spent, amount), "projected": usd_string(self.projected),
            })
        out["exceeded"] = self.exceeded
        if self.key_spent is not None:
            out["key_spent"] = usd_string(self.key_spent)
        return out


def format_fraction(part: int, whole: int) -> str:
    text = format((Decimal(part) / Decimal(whole)).quantize(Decimal("0.000001")).normalize(), "f")
    return "0" if Decimal(text) == 0 else text
