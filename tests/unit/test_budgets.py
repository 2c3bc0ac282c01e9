"""Budget periods, the forecast and the anomaly rule on synthetic histories with known answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from metering import budgets
from metering.errors import BadRequest

USD = 10**12


def test_month_period_in_new_york_rolls_over_at_local_midnight():
    before = datetime(2026, 12, 1, 4, 59, tzinfo=UTC)  # 23:59 on Nov 30 in New York
    after = datetime(2026, 12, 1, 5, 0, tzinfo=UTC)
    assert budgets.period_bounds("month", "America/New_York", before) == (
        datetime(2026, 11, 1, 4, tzinfo=UTC), datetime(2026, 12, 1, 5, tzinfo=UTC))
    assert budgets.period_bounds("month", "America/New_York", after)[0] == datetime(2026, 12, 1, 5, tzinfo=UTC)


def test_week_starts_on_monday_and_day_is_local():
    wed = datetime(2026, 11, 25, 12, tzinfo=UTC)
    assert budgets.period_bounds("week", "UTC", wed) == (datetime(2026, 11, 23, tzinfo=UTC),
                                                         datetime(2026, 11, 30, tzinfo=UTC))
    assert budgets.period_bounds("day", "Asia/Kolkata", wed) == (datetime(2026, 11, 24, 18, 30, tzinfo=UTC),
                                                                 datetime(2026, 11, 25, 18, 30, tzinfo=UTC))
    with pytest.raises(BadRequest):
        budgets.period_bounds("year", "UTC", wed)


def diurnal(day_rate: int, night_rate: int, start: datetime, end: datetime) -> dict[datetime, int]:
    """Spend per hour: `day_rate` from 08:00 to 20:00 UTC, `night_rate` otherwise."""
    out = {}
    hour = start
    while hour < end:
        out[hour] = day_rate if 8 <= hour.hour < 20 else night_rate
        hour += timedelta(hours=1)
    return out


def test_forecast_of_a_steady_diurnal_history_adds_the_profile_of_the_hours_left():
    now = datetime(2026, 11, 15, 0, 0, tzinfo=UTC)
    start, end = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
    history = diurnal(10 * USD, 1 * USD, now - timedelta(days=14), now)
    spent = sum(v for h, v in history.items() if h >= start)
    projected = budgets.project(spent=spent, now=now, period_start=start, period_end=end, hourly=history)
    # 16 days left, each 12 day hours at 10 and 12 night hours at 1 USD: 132 USD a day.
    assert projected == spent + 16 * 132 * USD


def test_a_one_day_spike_does_not_inflate_the_forecast():
    now = datetime(2026, 11, 15, 0, 0, tzinfo=UTC)
    start, end = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
    calm = diurnal(10 * USD, 1 * USD, now - timedelta(days=14), now)
    spiky = dict(calm)
    for h in range(24):  # yesterday cost 50x as much
        spiky[datetime(2026, 11, 14, h, tzinfo=UTC)] *= 50
    calm_p = budgets.project(spent=0, now=now, period_start=start, period_end=end, hourly=calm)
    spiky_p = budgets.project(spent=0, now=now, period_start=start, period_end=end, hourly=spiky)
    assert spiky_p == calm_p


def test_forecast_part_of_the_current_hour_and_no_history():
    now = datetime(2026, 11, 30, 23, 30, tzinfo=UTC)
    history = diurnal(4 * USD, 4 * USD, now.replace(minute=0) - timedelta(days=10), now)
    p = budgets.project(spent=100 * USD, now=now, period_start=datetime(2026, 11, 1, tzinfo=UTC),
                        period_end=datetime(2026, 12, 1, tzinfo=UTC), hourly=history)
    assert p == 102 * USD  # half of the last hour at 4 USD/h
    assert budgets.project(spent=5, now=now, period_start=now - timedelta(days=1),
                           period_end=now + timedelta(days=1), hourly={}) == 5


def test_forecast_with_less_than_a_day_of_history_extrapolates_the_rate_so_far():
    start = datetime(2026, 11, 25, tzinfo=UTC)
    now = start + timedelta(hours=6)
    history = {start + timedelta(hours=h): USD for h in range(6)}
    p = budgets.project(spent=6 * USD, now=now, period_start=start, period_end=start + timedelta(days=1),
                        hourly=history)
    assert p == 24 * USD


def test_thresholds_due_lowest_first_and_once():
    ts = [Decimal("0.5"), Decimal("0.8"), Decimal("1.0")]
    assert budgets.due_thresholds(amount=100, spent=85, thresholds=ts, fired=set()) == ts[:2]
    assert budgets.due_thresholds(amount=100, spent=85, thresholds=ts, fired={"0.5"}) == [ts[1]]
    assert budgets.due_thresholds(amount=100, spent=49, thresholds=ts, fired=set()) == []
    assert budgets.due_thresholds(amount=100, spent=100, thresholds=ts, fired={"0.5", "0.8"}) == [ts[2]]


@pytest.mark.parametrize(("today", "history", "fires"), [
    (30 * USD, [5 * USD] * 14, True),  # 6x its usual day
    (12 * USD, [5 * USD] * 14, False),  # 2.4x: busy, not anomalous
    (30 * USD, [5 * USD] * 13 + [40 * USD], False),  # it has spent more before
    (int(0.5 * USD), [USD // 100] * 14, False),  # tiny key: under the minimum
    (30 * USD, [0] * 14, False),  # brand-new key: no baseline
    (30 * USD, [0] * 10 + [2 * USD] * 4, True),  # sparse but real history
])
def test_anomaly_rule(today, history, fires):
    assert budgets.is_anomaly(today=today, previous_days=history, min_pico=USD) is fires


def test_scope_parsing_and_coverage():
    assert budgets.Scope.parse({"api_key_id": "k"}).covers(api_key_id="k", account_id="a")
    assert not budgets.Scope.parse({"api_key_id": "k"}).covers(api_key_id="j", account_id="a")
    assert budgets.Scope.parse({"account_id": "a"}).covers(api_key_id="j", account_id="a")
    assert budgets.Scope.parse({"all": True}).covers(api_key_id="j", account_id="b")
    assert not budgets.Scope.parse({"tag": {"project": "x"}}).covers(api_key_id="j", account_id="a")
    for bad in ({}, {"api_key_id": 3}, {"tag": "x"}, {"all": False}, {"team": "x"}, {"api_key_id": "a", "all": True}):
        with pytest.raises(BadRequest, match="scope"):
            budgets.Scope.parse(bad)


def _project_hour_by_hour(*, spent, now, period_start, period_end, hourly):
    """The forecast's definition, walked one hour at a time in exact fractions (the reference)."""
    import statistics
    from fractions import Fraction

    current = now.replace(minute=0, second=0, microsecond=0)
    first_seen = min((h for h, v in hourly.items() if v and h >= current - timedelta(days=7)), default=None)
    if now >= period_end or first_seen is None or current - first_seen < timedelta(days=1):
        return None  # other rules; not what this compares
    days = min(7, (current - first_seen).days or 1)
    profile = {h: Fraction(statistics.median(
        [hourly.get((current - timedelta(days=b)).replace(hour=0, minute=0).replace(hour=h), 0)
         for b in range(1, days + 1)])) for h in range(24)}
    remaining, hour = Fraction(0), current
    while hour < period_end:
        share = 1 - Fraction((now - current) // timedelta(microseconds=1), 3_600_000_000) if hour == current else 1
        remaining += profile[hour.hour] * share
        hour += timedelta(hours=1)
    return spent + int(remaining)


@pytest.mark.parametrize("seed", range(40))
def test_the_forecast_sums_the_hours_left_exactly(seed):
    import random

    rng = random.Random(seed)
    now = datetime(2026, 11, 20, rng.randrange(24), rng.randrange(60), rng.randrange(60), rng.randrange(10**6), tzinfo=UTC)
    hour = now.replace(minute=0, second=0, microsecond=0)
    hourly = {hour - timedelta(hours=h): rng.choice([0, rng.randrange(10**15), rng.randrange(10**19)])
              for h in range(1, 24 * 8)}
    start = datetime(2026, 11, 1, tzinfo=UTC) + timedelta(minutes=30 * rng.randrange(3))
    end = start + timedelta(days=rng.choice([1, 7, 30]), minutes=30 * rng.randrange(2))
    end = max(end, now + timedelta(hours=rng.randrange(1, 300)))
    expected = _project_hour_by_hour(spent=7, now=now, period_start=start, period_end=end, hourly=hourly)
    assert budgets.project(spent=7, now=now, period_start=start, period_end=end, hourly=hourly) == expected


# --- webhook addresses at delivery ---------------------------------------------------------------------


def test_a_webhook_host_resolving_to_a_metadata_address_is_refused_at_delivery():
    from metering.services.delivery import WebhookRefused, pin_address

    def rebinding(host, port):  # the name passed the check at creation; now it points at metadata
        return {"hooks.example": ["203.0.113.7", "169.254.169.254"], "v6.example": ["::ffff:169.254.169.254"],
                "ok.example": ["203.0.113.7", "2001:db8::1"]}[host]

    for url in ("https://hooks.example/x", "http://v6.example:8080/x"):
        with pytest.raises(WebhookRefused, match="link-local or metadata"):
            pin_address(url, allow_link_local=False, resolve=rebinding)
    urls, host, extensions = pin_address("https://hooks.example/x", allow_link_local=True, resolve=rebinding)
    assert urls[0] == "https://203.0.113.7/x" and host == {"host": "hooks.example"}
    urls, host, extensions = pin_address("https://user:pw@ok.example:8443/p?q=1", allow_link_local=False,
                                         resolve=rebinding)
    assert urls == ["https://user:pw@203.0.113.7:8443/p?q=1", "https://user:pw@[2001:db8::1]:8443/p?q=1"]
    assert host == {"host": "ok.example:8443"} and extensions == {"sni_hostname": "ok.example"}
