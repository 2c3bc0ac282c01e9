"""Budgets over HTTP with an injected clock: validation, access, status, once-only alerts,
restarts, and period rollover in a non-UTC zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from metering.api.app import create_app
from metering.ratecard import load_rate_card
from metering.settings import DEFAULT_RATE_CARD
from metering.store.db import Store
from tests.conftest import ADMIN, INGEST, SECRET_A, SECRET_B, auth, record

MILLION_INPUT = {"input_tokens": 1_000_000, "cached_tokens": 0, "output_tokens": 0, "thinking_tokens": None}  # $0.15


def budget(client, **fields):
    body = {"scope": {"api_key_id": "key-a"}, "period": "month", "amount": "1.00", **fields}
    r = client.post("/v1/budgets", json=body, headers=auth(ADMIN))
    assert r.status_code == 201, r.text
    return r.json()


def spend(client, n, *, start=0, key="key-a", at="2026-11-25T11:00:00Z"):
    records = [record(f"{key}-{at}-{i}", api_key_id=key, occurred_at=at, **MILLION_INPUT) for i in range(start, start + n)]
    assert client.post("/v1/usage", json=records, headers=auth(INGEST)).status_code == 200


def check(client):
    r = client.post("/v1/budgets/check", headers=auth(ADMIN))
    assert r.status_code == 200
    return r.json()["alerts_written"]


def alerts_of(client, token=ADMIN):
    return client.get("/v1/alerts", headers=auth(token)).json()["data"]


@pytest.mark.parametrize(("body", "phrase"), [
    ({"scope": {"team": "x"}}, "scope"),
    ({"period": "year"}, "period"),
    ({"amount": "-5"}, "amount"),
    ({"amount": 1.5}, "amount"),
    ({"amount": "abc"}, "amount"),
    ({"basis": "gross"}, "basis"),
    ({"thresholds": [0.5, 0]}, "thresholds[1]"),
    ({"thresholds": "0.5"}, "thresholds"),
    ({"tz": "Mars/Base"}, "IANA"),
    ({"webhook_url": "ftp://x"}, "webhook_url"),
    ({"webhook_url": "http://127.0.0.1:9/", "webhook_secret": "nope"}, "whsec_"),
    ({"forecast": "yes"}, "forecast"),
    ({"colour": "red"}, "colour"),
])
def test_invalid_budgets_get_clear_errors(client, body, phrase):
    full = {"scope": {"all": True}, "amount": "10", **body}
    r = client.post("/v1/budgets", json=full, headers=auth(ADMIN))
    assert r.status_code == 400 and phrase in r.json()["error"]["message"], r.text


def test_crud_and_what_a_key_may_see(client, two_keys):
    a = budget(client, thresholds=[0.25, 0.75])
    b = budget(client, scope={"api_key_id": "key-b"})
    acct = budget(client, scope={"account_id": "acct-1"})
    everything = budget(client, scope={"all": True}, webhook_url="http://127.0.0.1:9/hook")
    assert everything["webhook_secret"].startswith("whsec_")
    assert a["thresholds"] == ["0.25", "0.75"] and a["amount"] == "1"
    assert {x["id"] for x in client.get("/v1/budgets", headers=auth(ADMIN)).json()["data"]} == {
        a["id"], b["id"], acct["id"], everything["id"]}
    mine = {x["id"] for x in client.get("/v1/budgets", headers=auth(SECRET_A)).json()["data"]}
    assert mine == {a["id"], acct["id"], everything["id"]}
    assert client.get(f"/v1/budgets/{b['id']}", headers=auth(SECRET_A)).status_code == 403
    assert client.get(f"/v1/budgets/{a['id']}", headers=auth(SECRET_A)).status_code == 200
    assert "webhook_secret" not in client.get(f"/v1/budgets/{everything['id']}", headers=auth(ADMIN)).json()
    assert client.delete(f"/v1/budgets/{a['id']}", headers=auth(SECRET_A)).status_code == 403
    assert client.delete(f"/v1/budgets/{a['id']}", headers=auth(ADMIN)).status_code == 204
    assert client.get(f"/v1/budgets/{a['id']}", headers=auth(ADMIN)).status_code == 404
    assert client.post("/v1/budgets", json={"scope": {"all": True}, "amount": "1"},
                       headers=auth(INGEST)).status_code == 403


def test_status_for_the_gateway(client, two_keys):
    budget(client)
    budget(client, scope={"account_id": "acct-2"})  # key-b's account: not key-a's
    spend(client, 3)
    body = client.get("/v1/budgets/status", headers=auth(SECRET_A)).json()
    assert body["api_key_id"] == "key-a" and body["account_id"] == "acct-1"
    (st,) = body["budgets"]
    assert (st["spent"], st["remaining"], st["fraction"], st["exceeded"]) == ("0.45", "0.55", "0.45", False)
    assert st["period_start"] == "2026-11-01T00:00:00Z" and st["period_end"] == "2026-12-01T00:00:00Z"
    spend(client, 4, start=3)
    assert client.get("/v1/budgets/status?api_key_id=key-a", headers=auth(ADMIN)).json()["exceeded"] is True
    assert client.get("/v1/budgets/status?api_key_id=key-b", headers=auth(SECRET_A)).status_code == 403
    assert client.get("/v1/budgets/status", headers=auth(ADMIN)).status_code == 400


def test_each_threshold_fires_once_in_order_and_never_again(client, settings, store):
    b = budget(client)
    spend(client, 4)  # 0.60: 50%
    assert check(client) == [f"threshold:{b['id']}:2026-11-01T00:00:00+00:00:0.5"]
    assert check(client) == []
    spend(client, 3, start=4)  # 1.05: 80% and 100% at once
    assert [k.rsplit(":", 1)[1] for k in check(client)] == ["0.8", "1.0"]
    spend(client, 10, start=7)  # far above: nothing more
    assert check(client) == []
    fired = alerts_of(client)
    assert [a["payload"]["data"]["threshold"] for a in fired] == ["0.5", "0.8", "1.0"]
    assert {a["type"] for a in fired} == {"budget.threshold_crossed"}
    assert {a["status"] for a in fired} == {"no_endpoint"}
    assert fired[2]["payload"]["data"]["exceeded"] is True


def test_a_restart_never_fires_an_alert_again(tmp_path, settings, clock):
    path = tmp_path / "restart.duckdb"
    for round_ in range(2):
        with Store(path, clock=clock) as s:
            s.seed_rate_card(load_rate_card(DEFAULT_RATE_CARD), source="test")
            with TestClient(create_app(settings, store=s)) as client:
                if round_ == 0:
                    budget(client)
                    spend(client, 7)
                    assert len(check(client)) == 3
                else:
                    assert check(client) == []
                    assert len(alerts_of(client)) == 3


def test_a_new_period_starts_clean_at_local_month_end(client, clock):
    b = budget(client, tz="America/New_York")
    clock.now = datetime(2026, 12, 1, 4, 30, tzinfo=UTC)  # 23:30 on Nov 30 in New York
    spend(client, 4, at="2026-12-01T04:00:00Z")
    assert len(check(client)) == 1
    clock.now = datetime(2026, 12, 1, 5, 30, tzinfo=UTC)  # 00:30 on Dec 1 in New York: a new month
    assert check(client) == []  # December has spent nothing yet
    spend(client, 4, at="2026-12-01T05:10:00Z")
    (key,) = check(client)
    assert key == f"threshold:{b['id']}:2026-12-01T05:00:00+00:00:0.5"
    status = client.get("/v1/budgets/status?api_key_id=key-a", headers=auth(ADMIN)).json()["budgets"][0]
    assert status["period_start"] == "2026-12-01T05:00:00Z" and status["spent"] == "0.6"


def test_forecast_fires_once_when_the_trend_overruns(client, clock):
    b = budget(client, amount="10.00", forecast=True, thresholds=[1.0])
    clock.now = datetime(2026, 11, 10, 0, 0, tzinfo=UTC)
    for day in range(1, 10):  # 0.30 a day so far; at this rate the month ends near 9
        spend(client, 2, at=f"2026-11-{day:02d}T12:00:00Z")
    assert check(client) == []
    for day in range(3, 10):  # now 0.60 a day from the 3rd on: the median day projects past 10
        spend(client, 2, start=2, at=f"2026-11-{day:02d}T12:00:00Z")
    written = check(client)
    assert written == [f"forecast:{b['id']}:2026-11-01T00:00:00+00:00"]
    assert check(client) == []
    (alert,) = alerts_of(client)
    assert alert["type"] == "budget.forecast_exceeded"
    assert float(alert["payload"]["data"]["projected"]) > 10 > float(alert["payload"]["data"]["spent"])


def test_spend_anomaly_fires_once_per_key_and_day(client, clock):
    for day in range(11, 25):
        spend(client, 7, key="steady", at=f"2026-11-{day:02d}T10:00:00Z")  # 1.05 a day
    spend(client, 3, key="tiny", at="2026-11-25T10:00:00Z")
    assert not [k for k in check(client) if k.startswith("anomaly")]
    spend(client, 40, key="steady", at="2026-11-25T10:00:00Z")  # 6.00 today
    assert [k for k in check(client) if k.startswith("anomaly")] == ["anomaly:steady:2026-11-25"]
    spend(client, 40, start=40, key="steady", at="2026-11-25T10:30:00Z")
    assert check(client) == []
    (alert,) = [a for a in alerts_of(client) if a["type"] == "spend.anomaly"]
    assert alert["payload"]["data"]["spent"] == "6" and alert["api_key_id"] == "steady"


def test_a_key_sees_only_its_own_alerts(client, two_keys):
    budget(client)
    budget(client, scope={"api_key_id": "key-b"})
    spend(client, 4)
    spend(client, 4, key="key-b")
    check(client)
    assert len(alerts_of(client)) == 2
    (mine,) = alerts_of(client, SECRET_A)
    assert mine["payload"]["data"]["scope"] == {"api_key_id": "key-a"} and "webhook_url" not in mine
    assert len(alerts_of(client, SECRET_B)) == 1


def test_budget_counters_stay_exact_through_ingest_flush_rerating_and_a_new_key(client, store):
    """Each budget's spend counters (store.spend, advanced in the inserting commit) give the status
    that summing the ledger gives, whatever moved in between (issue 16)."""
    from metering import budgets as rules
    from metering.services import reprice
    from metering.services.budgets import status
    from metering.store import budgets as table
    from metering.store.budgets import active

    ctx = client.app.state.ctx
    for scope in ({"api_key_id": "key-a"}, {"account_id": "acct-x"}, {"all": True}, {"tag": {"project": "p"}}):
        budget(client, scope=scope, forecast=True)

    def compare() -> None:
        now = store.clock()
        with store.reading() as cur:
            for b in active(cur):
                counted = status(cur, b, now=now)
                start, end = rules.period_bounds(b.period, b.tz, now)
                lo = min(start, rules.utc_hour(now) - timedelta(days=rules.PROFILE_DAYS))
                summed = table.hourly(cur, b, period_start=start, lo=lo, end=end)  # from the ledger and rollup
                spent = sum(inside for inside, _ in summed.values())
                projected = rules.project(spent=spent, now=now, period_start=start, period_end=end,
                                          hourly={h: t for h, (_, t) in summed.items()})
                assert (counted.spent, counted.projected) == (spent, projected), b.scope

    spend(client, 3, at="2026-11-24T10:00:00Z")
    spend(client, 2, key="key-z", at="2026-11-25T09:00:00Z")
    r = client.post("/v1/usage", json=record("tagged", tags={"project": "p"}, **MILLION_INPUT), headers=auth(INGEST))
    assert r.status_code == 200
    compare()
    store.writer.call(store.writer.flush)
    compare()
    spend(client, 3, start=0, at="2026-11-24T10:00:00Z")  # duplicates: counted once
    spend(client, 4, start=10, at="2026-11-25T10:00:00Z")
    compare()
    r = client.post("/v1/rates", headers=auth(ADMIN), json={
        "model": "minimax-m2-7", "effective_from": "2026-11-01T00:00:00Z",
        "input": {"current": "0.20", "list": "0.30"}, "cached_input": {"current": "0.02", "list": "0.06"},
        "output": {"current": "0.50", "list": "1.20"}})
    assert r.status_code == 201, r.text
    reprice.reprice(ctx, start="2026-11-01", end="2026-11-26", dry_run=False)
    compare()  # re-rated: the counters follow the new prices
    with store.reading() as cur:
        account = next(b for b in active(cur) if b.scope.kind == "account")
        assert status(cur, account, now=store.clock()).spent == 0  # key-z is not registered yet
    store.add_key(api_key_id="key-z", account_id="acct-x", name=None, secret_sha256="f" * 64)
    compare()  # key-z's spend now counts for acct-x
    with store.reading() as cur:
        tagged = next(b for b in active(cur) if b.scope.kind == "tag")
        assert status(cur, account, now=store.clock()).spent > 0 and status(cur, tagged, now=store.clock()).spent > 0


def test_an_amount_beyond_what_is_stored_is_a_400_not_a_500(client):
    r = client.post("/v1/budgets", json={"scope": {"all": True}, "amount": "100000000"}, headers=auth(ADMIN))
    assert r.status_code == 400 and "amount" in r.json()["error"]["message"]
    assert client.post("/v1/budgets", json={"scope": {"all": True}, "amount": "9000000"},
                       headers=auth(ADMIN)).status_code == 201


def test_the_gateways_status_sees_each_budget_made_or_deleted_at_once_and_agrees_with_each_budgets_own(client):
    """Budget status keeps the active budgets between reads (until one changes): every read right after a
    create or a delete must still see exactly the budgets there are, with the figures of each one's own route."""
    spend(client, 2)  # $0.30 on key-a
    made = []
    for i, scope in enumerate(({"api_key_id": "key-a"}, {"all": True}, {"api_key_id": "key-a"}, {"all": True})):
        made.append(budget(client, scope=scope, amount=f"{i + 1}.00")["id"])
        status = client.get("/v1/budgets/status", params={"api_key_id": "key-a"}, headers=auth(INGEST)).json()
        assert {b["budget_id"] for b in status["budgets"]} == set(made), status
        for b in status["budgets"]:
            own = client.get(f"/v1/budgets/{b['budget_id']}/status", headers=auth(ADMIN)).json()
            assert (b["spent"], b["projected"]) == (own["spent"], own["projected"])
    for gone in made:
        assert client.delete(f"/v1/budgets/{gone}", headers=auth(ADMIN)).status_code == 204
        status = client.get("/v1/budgets/status", params={"api_key_id": "key-a"}, headers=auth(INGEST)).json()
        assert gone not in {b["budget_id"] for b in status["budgets"]}


def test_a_months_forecast_reads_the_whole_profile_days_from_the_counters(client):
    """Late in a month, the forecast's profile (hour-of-day medians over whole UTC days back to midnight
    PROFILE_DAYS before this hour) must come from every hour of those days, as an independent sum of the
    records gives them: the counters' read must not cut the first day at the hour PROFILE_DAYS ago."""
    from metering.budgets import PROFILE_DAYS, project

    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)  # the fixture's clock
    records, hourly = [], {}
    for back in range(1, 24 * (PROFILE_DAYS + 3)):
        hour = now - timedelta(hours=back)
        tokens = 1_000 * (1 + (hour.hour * 7 + back) % 13)  # differs by hour of day and by day
        records.append(record(f"f-{back}", api_key_id="key-a", occurred_at=hour.isoformat(), input_tokens=tokens,
                              cached_tokens=0, output_tokens=0, thinking_tokens=None))
        hourly[hour] = tokens * 150_000  # $0.15 per 1M input tokens, in pico-dollars
    assert client.post("/v1/usage", json=records, headers=auth(INGEST)).status_code == 200
    made = budget(client, amount="1000.00", forecast=True)
    start, end = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
    spent = sum(v for h, v in hourly.items() if h >= start)
    expected = project(spent=spent, now=now, period_start=start, period_end=end, hourly=hourly)
    got = client.get(f"/v1/budgets/{made['id']}/status", headers=auth(ADMIN)).json()
    gateway = client.get("/v1/budgets/status", params={"api_key_id": "key-a"}, headers=auth(INGEST)).json()
    from metering.pricing import usd_string

    assert got["spent"] == usd_string(spent) and got["projected"] == usd_string(expected), got
    assert gateway["budgets"][0]["projected"] == usd_string(expected)
