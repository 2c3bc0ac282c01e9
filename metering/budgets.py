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
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from metering.errors import BadRequest
from metering.timewindows import local_midnight, zone

PERIODS = ("day", "week", "month")
BASES = ("cost", "list_cost")
DEFAULT_THRESHOLDS = (Decimal("0.5"), Decimal("0.8"), Decimal("1.0"))
PROFILE_DAYS = 7
ANOMALY_DAYS = 14
ANOMALY_FACTOR = 3
ANOMALY_MIN_HISTORY_DAYS = 3


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
        nxt = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    else:
        raise BadRequest(f"period: must be one of {', '.join(PERIODS)}, got {period!r}")
    return local_midnight(first, zone_info), local_midnight(nxt, zone_info)


def project(*, spent: int, now: datetime, period_start: datetime, period_end: datetime,
            hourly: dict[datetime, int]) -> int:
    """Projected spend at the period's end (pico-dollars). `hourly`: spend per UTC hour start,
    covering at least the last PROFILE_DAYS days before `now` (missing hours spent nothing)."""
    if now >= period_end:
        return spent
    current_hour = now.replace(minute=0, second=0, microsecond=0)
    history_start = current_hour - timedelta(days=PROFILE_DAYS)
    first_seen = min((h for h, v in hourly.items() if v and h >= history_start), default=None)
    if first_seen is None:
        return spent
    if current_hour - first_seen < timedelta(days=1):
        elapsed = (now - max(period_start, first_seen)).total_seconds()
        if elapsed <= 0:
            return spent
        return spent + int(spent * (period_end - now).total_seconds() / elapsed)
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
        """Does the budget apply to this key? Tag scopes follow tags, not keys."""
        return (self.kind == "all" or (self.kind == "api_key" and self.value == api_key_id)
                or (self.kind == "account" and self.value == account_id))


def utc_hour(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
