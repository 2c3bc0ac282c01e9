"""Local-time windows: parsing bounds and cutting [start, end) into hour, day or month
buckets of an IANA time zone, exactly across DST changes and half-hour offsets.

Everything returned is an aware UTC datetime; buckets are half-open.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from metering.errors import BadRequest, RecordError
from metering.records import parse_timestamp

BUCKETS = ("hour", "day", "month")
MAX_BUCKETS = 10_000


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadRequest(f"tz: unknown IANA time zone {name!r} (for example UTC, Europe/Berlin)") from None


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    """The first instant of a local day. Where midnight does not exist (a DST jump at 00:00),
    the day begins at the instant the clocks jump to; where it exists twice, at the first."""
    return datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)


def parse_bound(value: str, tz: ZoneInfo, name: str) -> datetime:
    """A date (local midnight in tz) or an RFC 3339 timestamp with an offset -> UTC."""
    text = value.strip()
    if len(text) == 10:
        try:
            return local_midnight(date.fromisoformat(text), tz)
        except ValueError:
            raise BadRequest(f"{name}: not a date (YYYY-MM-DD): {value!r}") from None
    try:
        return parse_timestamp(text, name)
    except RecordError as exc:
        raise BadRequest(exc.message) from None


def next_boundary(t: datetime, bucket: str, tz: ZoneInfo) -> datetime:
    """The first bucket boundary strictly after instant t."""
    local = t.astimezone(tz)
    if bucket == "hour":
        return local.replace(minute=0, second=0, microsecond=0).astimezone(UTC) + timedelta(hours=1)
    if bucket == "day":
        return local_midnight(local.date() + timedelta(days=1), tz)
    if bucket == "month":
        first = date(local.year + local.month // 12, local.month % 12 + 1, 1)
        return local_midnight(first, tz)
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
            raise BadRequest(f"the range has more than {MAX_BUCKETS} {bucket} buckets: narrow it or use a larger bucket")
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
