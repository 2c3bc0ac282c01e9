"""Bounds on every input (issue 11): occurred_at from 2000-01-01 to now + 5 minutes on both ingest
paths, query dates 2000..2100, IANA zones only, group_by of at most 8 fields; anything else a 400 (or
that record's error) naming the parameter, never a 5xx, and reads never fail on any stored row."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metering.services.ingest import FAST_PATH_MIN
from tests.conftest import ADMIN, INGEST, NOW, SECRET_A, api_routes, auth, record

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@st.composite
def timestamps(draw) -> str:
    year = draw(st.integers(1, 9999))
    month, day = draw(st.integers(1, 12)), draw(st.integers(1, 28))
    hour, minute, second = draw(st.integers(0, 23)), draw(st.integers(0, 59)), draw(st.integers(0, 59))
    offset = draw(st.integers(-(23 * 60 + 59), 23 * 60 + 59))
    sign = "-" if offset < 0 else "+"
    zone = "Z" if offset == 0 and draw(st.booleans()) else f"{sign}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}{zone}"


@SETTINGS
@given(st.lists(timestamps(), min_size=1, max_size=3), st.booleans())
def test_any_occurred_at_is_that_records_error_and_never_costs_the_good_ones(client, stamps, large):
    """Years 1 to 9999 with every offset from -23:59 to +23:59, in small bodies (one record at a time)
    and large ones (the column path): never a 5xx; the body's good records are stored; reads go on."""
    good_count = FAST_PATH_MIN if large else 2
    tag = abs(hash((tuple(stamps), large)))
    good = [record(f"good-{tag}-{i}") for i in range(good_count)]
    odd = [record(f"odd-{tag}-{i}", occurred_at=ts) for i, ts in enumerate(stamps)]
    r = client.post("/v1/usage", json=good + odd, headers=auth(INGEST))
    assert r.status_code in (200, 422), r.text
    body = r.json()
    assert body["accepted"] + body["duplicates"] >= good_count
    for error in body["errors"]:
        assert error["index"] >= good_count and "occurred_at" in error["error"]
    for path in ("/v1/unpriced", "/v1/usage", f"/v1/records/good-{tag}-0", "/v1/reports/daily"):
        assert client.get(path, headers=auth(ADMIN)).status_code == 200, path
    for i, ts in enumerate(stamps):
        r = client.get(f"/v1/records/odd-{tag}-{i}", headers=auth(ADMIN))
        assert r.status_code in (200, 404), (ts, r.text)


@pytest.mark.parametrize("occurred_at", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00",
                                         "0001-01-01T00:00:00+00:30", "1999-12-31T23:59:59Z",
                                         "2000-01-01T08:59:59+09:00"])
@pytest.mark.parametrize("size", [1, FAST_PATH_MIN])
def test_out_of_range_occurred_at_is_rejected_on_both_paths_issue_11(client, store, occurred_at, size):
    good = [record(f"g-{size}-{i}") for i in range(size)]
    r = client.post("/v1/usage", json=[*good, record("bad", occurred_at=occurred_at)], headers=auth(INGEST))
    assert r.status_code == 422, r.text
    (error,) = r.json()["errors"]
    assert error["index"] == size and error["field"] == "occurred_at" and r.json()["accepted"] == size
    assert "2000-01-01" in error["error"] or "out of range" in error["error"]
    ok = client.post("/v1/usage", json=record("edge", occurred_at="2000-01-01T00:00:00Z"), headers=auth(INGEST))
    assert ok.status_code == 200


def test_reads_never_fail_on_a_row_stored_before_the_bounds_existed_issue_11(client, store):
    """A row with a year-0 timestamp (the column path once stored 0001-01-01T00:00:00+00:30)."""
    assert client.post("/v1/usage", json=record("fine"), headers=auth(INGEST)).status_code == 200
    store.writer.call(lambda con: con.execute(
        "INSERT INTO ledger (request_id, occurred_at, received_at, api_key_id, model, input_tokens, cached_tokens, "
        "cache_write_tokens, output_tokens, web_search_requests, seq) VALUES ('legacy', '0000-12-31 23:30:00', "
        "'2026-11-01', 'key-a', 'unpriced-model', 1, 0, 0, 1, 0, 999999)"))
    for path in ("/v1/unpriced", "/v1/records/legacy", "/v1/records/fine", "/v1/usage", "/v1/reports/daily",
                 "/v1/reports/focus?start=2026-11-01&end=2026-11-26", "/v1/budgets/status?api_key_id=key-a"):
        r = client.get(path, headers=auth(ADMIN))
        assert r.status_code == 200, (path, r.text)
    assert "0000-12-31T23:30:00" in client.get("/v1/records/legacy", headers=auth(ADMIN)).json()["record"]["occurred_at"]
    assert client.get("/v1/unpriced", headers=auth(ADMIN)).json()["data"][0]["first_bucket"].startswith("0000-12-31")


BAD_QUERIES = [
    ("tz", "America"), ("tz", "__pycache__"), ("tz", "x" * 300), ("tz", "../../etc/passwd"), ("tz", "UTC\x00"),
    ("start", "0001-01-01"), ("start", "9999-12-30"), ("end", "2101-01-01"), ("start", "0001-01-01T00:00:00+14:00"),
    ("group_by", ",".join(f"tag:t{i}" for i in range(5000))[:30000]), ("group_by", ",".join(["model"] * 9)),
    ("bucket", "week"), ("month", "9999-12"), ("month", "0001-01"), ("month", "2026-13"),
]
ROUTES = [
    ("/v1/usage", {}), ("/v1/usage", {"tz": "Asia/Tokyo"}), ("/v1/usage", {"bucket": "month"}),
    ("/v1/reports/daily", {}), ("/v1/reports/daily", {"tz": "Asia/Tokyo"}),
    ("/v1/reports/statement", {"account": "acct-1", "month": "2026-11"}),
    ("/v1/reports/statement", {"account": "acct-1", "month": "2026-11", "tz": "Asia/Tokyo"}),
    ("/v1/reports/focus", {"start": "2026-11-01", "end": "2026-11-26"}),
]


@pytest.mark.parametrize(("name", "value"), BAD_QUERIES, ids=[f"{n}={v[:20]}" for n, v in BAD_QUERIES])
def test_out_of_bounds_query_parameters_are_a_400_naming_the_parameter_issue_11(client, two_keys, name, value):
    declared = dict(get_routes(client.app))
    for path, base in ROUTES:
        if name not in declared[path]:
            continue
        r = client.get(path, params={**base, name: value}, headers=auth(ADMIN))
        assert r.status_code == 400, (path, name, r.status_code, r.text[:200])
        message = r.json()["error"]["message"]
        assert message.startswith(name) or f"{name}:" in message or name in message, (path, message)
    if name in ("tz", "start", "group_by", "bucket"):
        as_key = client.get("/v1/usage", params={name: value}, headers=auth(SECRET_A))
        assert as_key.status_code == 400


@pytest.mark.parametrize("body", [
    {"start": "0001-01-01", "end": "2026-01-01"}, {"start": "2026-01-01", "end": "9999-12-31"},
    {"start": "2026-01-01", "end": "2026-02-01", "tz": "America"}, {"start": "2026-01-01", "end": "2026-02-01",
                                                                   "tz": "__pycache__"}])
def test_reprice_and_budgets_refuse_out_of_bounds_input_with_a_400(client, body):
    r = client.post("/v1/reprice", json={**body, "dry_run": True}, headers=auth(ADMIN))
    assert r.status_code == 400, r.text
    r = client.post("/v1/budgets", json={"scope": {"all": True}, "amount": "5", "tz": "America"}, headers=auth(ADMIN))
    assert r.status_code == 400 and "tz" in r.json()["error"]["message"]


text = st.text(st.characters(codec="utf-8"), max_size=80)
dates = st.one_of(st.dates().map(lambda d: d.isoformat()), text,
                  st.sampled_from(["0001-01-01", "9999-12-31", "1999-12-31", "2100-01-01", "2100-01-02",
                                   "2000-01-01T00:00:00-14:00", "2099-12-31T23:59:59+14:00"]))
VALUES = {
    "start": dates, "end": dates, "month": st.one_of(text, st.sampled_from(["0001-01", "9999-12", "2026-11"])),
    "tz": st.one_of(text, st.sampled_from(["America", "__pycache__", "Asia/Kolkata", "x" * 300, "UTC"])),
    "group_by": st.one_of(text, st.lists(st.sampled_from(["model", "tag:a", "api_key_id", "account_id", "endpoint"]),
                                         max_size=12).map(",".join)),
    "bucket": st.one_of(text, st.sampled_from(["hour", "day", "month"])),
}


def get_routes(app) -> list[tuple[str, list[str]]]:
    out = []
    for route in api_routes(app):
        if "GET" in route.methods and route.include_in_schema and not route.dependant.path_params:
            out.append((route.path, [p.name for p in route.dependant.query_params]))
    return out


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.data())
def test_every_query_parameter_of_every_get_route_gets_200_or_400_never_a_5xx(client, two_keys, data):
    """Generated from the route table: arbitrary text and extremes for every declared parameter."""
    for path, names in get_routes(client.app):
        params = {}
        for name in names:
            if data.draw(st.booleans(), label=f"{path} {name}?"):
                params[name] = data.draw(VALUES.get(name, text), label=f"{path} {name}")
        for token in (ADMIN, SECRET_A):
            r = client.get(path, params=params, headers=auth(token))
            assert r.status_code in (200, 400, 403, 404, 422), (path, params, r.status_code, r.text[:300])


def test_the_default_window_is_inside_the_bounds(client):
    r = client.get("/v1/usage", params={"start": (NOW - timedelta(days=3)).date().isoformat()}, headers=auth(ADMIN))
    assert r.status_code == 200
