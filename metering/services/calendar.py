"""Billing months: their bounds in the billing time zone, which months are closed, and which month
is the first open one (where the corrections of closed months are billed)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from metering.timewindows import local_midnight, next_month, zone

EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)  # no usage record occurs before this (records.py)


def month_key(first: date) -> str:
    return first.strftime("%Y-%m")


def month_date(key: str) -> date:
    return date(int(key[:4]), int(key[5:7]), 1)


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Calendar:
    tz: str
    zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "zone", zone(self.tz))

    def bounds(self, first: date) -> tuple[datetime, datetime]:
        """[start, end) of the month beginning on `first`, as UTC instants."""
        return local_midnight(first, self.zone), local_midnight(next_month(first), self.zone)

    def month_of(self, instant: datetime) -> date:
        return instant.astimezone(self.zone).date().replace(day=1)

    def months(self, first: date, stop: date) -> list[date]:
        """The months from `first` up to (not including) `stop`."""
        out = []
        while first < stop:
            out.append(first)
            first = next_month(first)
        return out


@dataclass(frozen=True)
class State:
    """The closed months (a contiguous run, oldest first) and the billing time zone in force: the
    zone the months were closed in, else the setting."""

    tz: str
    setting_tz: str
    closed: dict[str, dict[str, Any]]

    @classmethod
    def read(cls, src: Any) -> State:
        return cls.of(src.periods(), src.billing_tz)

    @classmethod
    def of(cls, periods: list[dict[str, Any]], setting_tz: str) -> State:
        tz = periods[0]["tz"] if periods else setting_tz
        return cls(tz=tz, setting_tz=setting_tz, closed={p["month"]: p for p in periods})

    @property
    def first_closed(self) -> str | None:
        return min(self.closed) if self.closed else None

    @property
    def last_closed(self) -> str | None:
        return max(self.closed) if self.closed else None

    @property
    def first_open(self) -> str | None:
        """The month after the last closed one: where late usage of closed months is billed."""
        last = self.last_closed
        return month_key(next_month(month_date(last))) if last else None

    def billed_elsewhere(self, key: str) -> bool:
        """Months before the first closed month bill nothing of their own: usage found there later is
        billed as a correction on the first open month."""
        first = self.first_closed
        return first is not None and key < first
