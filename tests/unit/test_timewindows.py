"""Local buckets, exact across DST changes and half-hour offsets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from metering.errors import BadRequest
from metering.timewindows import cut, parse_bound, zone

NY, KOLKATA, UTC_Z = zone("America/New_York"), zone("Asia/Kolkata"), zone("UTC")


def test_new_york_spring_forward_day_has_23_hours_and_fall_back_day_25():
    days = cut(parse_bound("2026-03-07", NY, "start"), parse_bound("2026-03-10", NY, "end"), "day", NY)
    assert [(e - s) for s, e in days] == [timedelta(hours=24), timedelta(hours=23), timedelta(hours=24)]
    days = cut(parse_bound("2026-10-31", NY, "start"), parse_bound("2026-11-03", NY, "end"), "day", NY)
    assert [(e - s) for s, e in days] == [timedelta(hours=24), timedelta(hours=25), timedelta(hours=24)]
    assert days[1][0] == datetime(2026, 11, 1, 4, 0, tzinfo=UTC)


def test_hour_buckets_across_dst_are_real_hours():
    hours = cut(parse_bound("2026-03-08", NY, "start"), parse_bound("2026-03-09", NY, "end"), "hour", NY)
    assert len(hours) == 23 and all(e - s == timedelta(hours=1) for s, e in hours)
    hours = cut(parse_bound("2026-11-01", NY, "start"), parse_bound("2026-11-02", NY, "end"), "hour", NY)
    assert len(hours) == 25


def test_kolkata_days_start_at_18_30_utc_and_hours_at_half_past():
    days = cut(parse_bound("2026-11-01", KOLKATA, "start"), parse_bound("2026-11-03", KOLKATA, "end"), "day", KOLKATA)
    assert days[0] == (datetime(2026, 10, 31, 18, 30, tzinfo=UTC), datetime(2026, 11, 1, 18, 30, tzinfo=UTC))
    hours = cut(days[0][0], days[0][1], "hour", KOLKATA)
    assert len(hours) == 24 and all(s.minute == 30 for s, _ in hours)


def test_months_are_local_calendar_months():
    months = cut(parse_bound("2026-01-01", NY, "start"), parse_bound("2027-01-01", NY, "end"), "month", NY)
    assert len(months) == 12
    assert months[1] == (datetime(2026, 2, 1, 5, tzinfo=UTC), datetime(2026, 3, 1, 5, tzinfo=UTC))
    assert months[11][1] == datetime(2027, 1, 1, 5, tzinfo=UTC)


def test_partial_first_and_last_buckets_keep_the_window_half_open():
    start = datetime(2026, 11, 1, 6, tzinfo=UTC)
    end = datetime(2026, 11, 3, 6, tzinfo=UTC)
    days = cut(start, end, "day", UTC_Z)
    assert days[0] == (start, datetime(2026, 11, 2, tzinfo=UTC))
    assert days[-1] == (datetime(2026, 11, 3, tzinfo=UTC), end)


def test_bounds_errors_are_clear():
    with pytest.raises(BadRequest, match="offset"):
        parse_bound("2026-11-01T00:00:00", UTC_Z, "start")
    with pytest.raises(BadRequest, match="unknown IANA"):
        zone("Mars/Olympus")
    with pytest.raises(BadRequest, match="after start"):
        cut(datetime(2026, 1, 2, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC), "day", UTC_Z)
    with pytest.raises(BadRequest, match="bucket"):
        cut(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC), "week", UTC_Z)
    with pytest.raises(BadRequest, match="more than"):
        cut(datetime(2000, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC), "hour", UTC_Z)
