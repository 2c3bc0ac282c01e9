"""Local-time windows: parsing bounds and cutting [start, end) into hour, day or month
buckets of an IANA time zone, exactly across DST changes and half-hour offsets.

Everything returned is an aware UTC datetime; buckets are half-open.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

from metering.errors import BadRequest, RecordError
from metering.records import parse_timestamp

BUCKETS = ("hour", "day", "month")
MAX_BUCKETS = 10_000
# Every date and timestamp of a query lies in [FIRST_DAY, LAST_DAY] (a timestamp may carry any offset).
FIRST_DAY = date(2000, 1, 1)
LAST_DAY = date(2100, 1, 1)
_EARLIEST = datetime(FIRST_DAY.year, 1, 1, tzinfo=UTC) - timedelta(days=1)
_LATEST = datetime(LAST_DAY.year, 1, 1, tzinfo=UTC) + timedelta(days=1)


@cache
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones())


def zone(name: Any, param: str = "tz") -> ZoneInfo:
    """An IANA zone by name: only names of the IANA database (never a path, a directory or a file)."""
    if not isinstance(name, str) or name not in _zone_names():
        shown = name[:64] if isinstance(name, str) else name
        raise BadRequest(f"{param}: unknown IANA time zone {shown!r} (for example UTC, Europe/Berlin, Asia/Kolkata)")
    return ZoneInfo(name)


def _in_range(day: date, name: str, value: Any) -> date:
    if not FIRST_DAY <= day <= LAST_DAY:
        raise BadRequest(f"{name}: must lie between {FIRST_DAY} and {LAST_DAY}, got {str(value)[:64]!r}")
    return day


def parse_date(value: str | date, name: str) -> date:
    """A date (YYYY-MM-DD) between 2000-01-01 and 2100-01-01."""
    if isinstance(value, date):
        return _in_range(value, name, value)
    try:
        day = date.fromisoformat(value) if isinstance(value, str) and len(value.strip()) == 10 else None
    except ValueError:
        day = None
    if day is None:
        raise BadRequest(f"{name}: not a date (YYYY-MM-DD): {str(value)[:64]!r}")
    return _in_range(day, name, value)


def parse_month(value: str, name: str = "month") -> date:
    """YYYY-MM -> its first day, between 2000-01 and 2099-12."""
    try:
        first = datetime.strptime(value, "%Y-%m").date() if isinstance(value, str) else None
    except ValueError:
        first = None
    if first is None:
        raise BadRequest(f"{name}: not a month (YYYY-MM): {str(value)[:64]!r}")
    if not FIRST_DAY <= first < LAST_DAY:
        raise BadRequest(f"{name}: must lie between 2000-01 and 2099-12, got {value!r}")
    return first


def next_month(first: date) -> date:
    return date(first.year + first.month // 12, first.month % 12 + 1, 1)


def naive_utc(ts: datetime) -> datetime:
    """Aware -> naive UTC, the form stored in TIMESTAMP columns."""
    return ts.astimezone(UTC).replace(tzinfo=None)


def floor_slot(ts: datetime, minutes: int = 15) -> datetime:
    """The start of the 15-minute slot holding ts (aware UTC)."""
    ts = ts.astimezone(UTC)
    return ts.replace(minute=ts.minute - ts.minute % minutes, second=0, microsecond=0)


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    """The first instant of a local day. Where midnight does not exist (a DST jump at 00:00),
    the day begins at the instant the clocks jump to; where it exists twice, at the first."""
    return datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)


def parse_bound(value: str, tz: ZoneInfo, name: str) -> datetime:
    """A date (local midnight in tz) or an RFC 3339 timestamp with an offset -> UTC, between
    2000-01-01 and 2100-01-01."""
    text = value.strip()
    if len(text) == 10:
        return local_midnight(parse_date(text, name), tz)
    try:
        instant = parse_timestamp(text[:64], name)
    except RecordError as exc:
        raise BadRequest(exc.message) from None
    if not _EARLIEST <= instant <= _LATEST:
        raise BadRequest(f"{name}: must lie between {FIRST_DAY} and {LAST_DAY}, got {text[:64]!r}")
    return instant


def next_boundary(t: datetime, bucket: str, tz: ZoneInfo) -> datetime:
    """The first bucket boundary strictly after instant t."""
    local = t.astimezone(tz)
    if bucket == "hour":
        return local.replace(minute=0, second=0, microsecond=0).astimezone(UTC) + timedelta(hours=1)
    if bucket == "day":
        return local_midnight(local.date() + timedelta(days=1), tz)
    if bucket == "month":
        return local_midnight(next_month(local.date().replace(day=1)), tz)
    raise BadRequest(f"bucket: must be one of {', '.join(BUCKETS)}, got {bucket!r}")


def cut(start: datetime, end: datetime, bucket: str, tz: ZoneInfo) -> list[tuple[datetime, datetime]]:
    """[start, end) cut at local bucket boundaries; the first and last buckets may be partial."""
    if bucket not in BUCKETS:
        raise BadRequest(f"bucket: must be one of {', '.join(BUCKETS)}, got {bucket!r}")
    if end <= start:
        raise BadRequest(f"end ({end.isoformat()}) must be after start ({start.isoformat()})")
    out: list[tuple[datetime, datetime]] = []
    cursor = start
    while cursor < end:
        if len(out) >= MAX_BUCKETS:
            raise BadRequest(f"bucket: the range from start to end has more than {MAX_BUCKETS} {bucket} buckets; "
                             "narrow it or use a larger bucket")
        nxt = min(next_boundary(cursor, bucket, tz), end)
        out.append((cursor, nxt))
        cursor = nxt
    return out


def default_range(now: datetime, tz: ZoneInfo, days: int = 30) -> tuple[datetime, datetime]:
    """The last `days` local days, today included."""
    today = now.astimezone(tz).date()
    return local_midnight(today - timedelta(days=days - 1), tz), local_midnight(today + timedelta(days=1), tz)


def aligned(instants: list[datetime], seconds: int) -> bool:
    return all(int(t.timestamp()) % seconds == 0 and t.microsecond == 0 for t in instants)
