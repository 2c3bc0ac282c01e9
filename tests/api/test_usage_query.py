"""GET /v1/usage: local buckets, grouping, and the rollup agreeing with the ledger."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from metering.store import queries
from metering.timewindows import cut, parse_bound, zone
from tests.conftest import ADMIN, auth, generate_records, ingest, record


def usage(client, token=ADMIN, **params):
    r = client.get("/v1/usage", params=params, headers=auth(token))
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize(("tz", "instants", "expected"), [
    ("UTC", ["2026-11-01T23:59:59.999999Z", "2026-11-02T00:00:00Z"], {"2026-11-01": 1, "2026-11-02": 1}),
    # New York: EDT ends 2026-11-01 06:00Z; local midnight is 04:00Z before and 05:00Z after.
    ("America/New_York", ["2026-11-01T03:59:59Z", "2026-11-01T04:00:00Z", "2026-11-02T04:59:59Z",
                          "2026-11-02T05:00:00Z"], {"2026-10-31": 1, "2026-11-01": 2, "2026-11-02": 1}),
    # Spring forward 2026-03-08: the local day is 23 hours long, 05:00Z to 04:00Z.
    ("America/New_York", ["2026-03-08T04:59:59Z", "2026-03-08T05:00:00Z", "2026-03-09T03:59:59Z",
                          "2026-03-09T04:00:00Z"], {"2026-03-07": 1, "2026-03-08": 2, "2026-03-09": 1}),
    ("Asia/Kolkata", ["2026-11-01T18:29:59Z", "2026-11-01T18:30:00Z"], {"2026-11-01": 1, "2026-11-02": 1}),
])
def test_records_around_midnight_and_dst_land_in_the_right_local_day(client, tz, instants, expected):
    ingest(client, [record(f"t{i}", occurred_at=ts) for i, ts in enumerate(instants)])
    days = sorted(expected)
    end = (datetime.fromisoformat(days[-1]) + timedelta(days=1)).date().isoformat()
    for group_by in (None, "tag:none"):  # the rollup path and the ledger path
        body = usage(client, start=days[0], end=end, tz=tz, **({"group_by": group_by} if group_by else {}))
        got = {b["start"][:10]: sum(x["requests"] for x in b["results"]) for b in body["buckets"]}
        assert got == expected


def test_rollup_and_ledger_agree_for_every_bucket_and_zone(client, store):
    records = generate_records(5000, seed=7)
    ingest(client, records)
    group = queries.GroupBy.parse("model,endpoint,api_key_id")
    for tz_name in ("UTC", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "Asia/Kathmandu"):
        tz = zone(tz_name)
        for bucket in ("hour", "day", "month"):
            buckets = cut(parse_bound("2026-11-01", tz, "s"), parse_bound("2026-11-26", tz, "e"), bucket, tz)
            with store.reading() as cur:
                fast = queries.usage(cur, buckets=buckets, group_by=group, api_key_id=None)
                slow = queries.usage(cur, buckets=buckets, group_by=group, api_key_id=None, force_ledger=True)
            assert fast == slow, (tz_name, bucket)


def test_totals_equal_the_sum_of_the_buckets_and_records(client):
    records = generate_records(2000, seed=3)
    ingest(client, records)
    body = usage(client, start="2026-10-01", end="2026-12-01", group_by="model,api_key_id")
    counted = sum(x["requests"] for b in body["buckets"] for x in b["results"])
    assert counted == body["totals"]["requests"] == 2000
    assert body["totals"]["input_tokens"] == sum(r["input_tokens"] for r in records)
    assert body["totals"]["thinking_tokens"] == sum(r["thinking_tokens"] or 0 for r in records)
    assert body["totals"]["unpriced_requests"] == sum(r["model"] == "unpriced-model" for r in records)


def test_group_by_tag_and_endpoint(client):
    ingest(client, [
        record("g1", tags={"project": "alpha"}, endpoint="responses"),
        record("g2", tags={"project": "alpha"}, endpoint="messages"),
        record("g3", tags={"project": "beta"}, endpoint="messages"),
        record("g4", endpoint=None),
    ])
    body = usage(client, start="2026-11-25", end="2026-11-26", group_by="tag:project")
    got = {x["tag:project"]: x["requests"] for x in body["buckets"][0]["results"]}
    assert got == {"alpha": 2, "beta": 1, None: 1}
    body = usage(client, start="2026-11-25", end="2026-11-26", group_by="endpoint")
    got = {x["endpoint"]: x["requests"] for x in body["buckets"][0]["results"]}
    assert got == {"responses": 1, "messages": 2, None: 1}


def test_hour_buckets_with_a_timestamp_window_are_half_open(client):
    ingest(client, [record("h1", occurred_at="2026-11-25T10:00:00Z"), record("h2", occurred_at="2026-11-25T10:59:59Z"),
                    record("h3", occurred_at="2026-11-25T11:00:00Z"), record("h4", occurred_at="2026-11-25T09:59:59Z")])
    body = usage(client, start="2026-11-25T10:00:00Z", end="2026-11-25T11:00:00Z", bucket="hour")
    assert len(body["buckets"]) == 1 and body["totals"]["requests"] == 2
    body = usage(client, start="2026-11-25T10:07:00+00:00", end="2026-11-25T11:30:00Z", bucket="hour")
    assert [b["start"] for b in body["buckets"]] == ["2026-11-25T10:07:00+00:00", "2026-11-25T11:00:00+00:00"]
    assert [sum(x["requests"] for x in b["results"]) for b in body["buckets"]] == [1, 1]


def test_money_is_a_decimal_string(client):
    ingest(client, [record("m1", input_tokens=2006, cached_tokens=1920, output_tokens=300, thinking_tokens=200)])
    body = usage(client, start="2026-11-25", end="2026-11-26")
    assert body["totals"]["cost"] == "0.0002505" and body["totals"]["list_cost"] == "0.000501"
    assert body["currency"] == "USD"


@pytest.mark.parametrize(("params", "phrase"), [
    ({"group_by": "account"}, "group_by"),
    ({"group_by": "tag:bad name"}, "group_by"),
    ({"bucket": "week"}, "bucket"),
    ({"tz": "Nowhere/Land"}, "IANA"),
    ({"start": "2026-13-01"}, "start"),
    ({"start": "2026-11-02", "end": "2026-11-01"}, "after start"),
    ({"start": "2026-11-01T00:00:00"}, "offset"),
])
def test_bad_query_parameters_are_400_with_a_message(client, params, phrase):
    r = client.get("/v1/usage", params=params, headers=auth(ADMIN))
    assert r.status_code == 400 and phrase in r.json()["error"]["message"]


def test_default_window_is_the_last_30_local_days(client, clock):
    rng = random.Random(1)
    ingest(client, [record(f"d{i}", occurred_at=(clock.now - timedelta(days=rng.randint(0, 40))).isoformat())
                    for i in range(50)])
    body = usage(client)
    assert len(body["buckets"]) == 30
    assert body["buckets"][-1]["start"].startswith(clock.now.astimezone(UTC).date().isoformat())
