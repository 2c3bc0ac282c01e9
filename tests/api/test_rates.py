"""GET/POST /v1/rates: versions, and records priced by the version in effect at occurred_at."""

from __future__ import annotations

from tests.conftest import ADMIN, INGEST, MODEL, auth, record

NEW = {"model": MODEL, "effective_from": "2026-11-25T00:00:00Z",
       "input": {"current": "0.10", "list": "0.30"}, "cached_input": {"current": "0.02", "list": "0.06"},
       "output": {"current": "0.50", "list": "1.20"}, "web_search": {"current": "5", "list": "10"}}


def test_a_new_version_prices_records_from_its_effective_from_on(client, store):
    r = client.post("/v1/rates", json=NEW, headers=auth(ADMIN))
    assert r.status_code == 201 and r.json()["id"] == 2 and r.json()["input"] == {"current": "0.1", "list": "0.3"}
    client.post("/v1/usage", json=[
        record("before", occurred_at="2026-11-24T23:59:59Z", input_tokens=1_000_000, cached_tokens=0,
               output_tokens=0, thinking_tokens=None),
        record("after", occurred_at="2026-11-25T00:00:00Z", input_tokens=1_000_000, cached_tokens=0,
               output_tokens=0, thinking_tokens=None, web_search_requests=2),
    ], headers=auth(INGEST))
    with store.reading() as cur:
        rows = dict((r[0], r[1:]) for r in cur.execute(
            "SELECT request_id, rate_version_id, cost_pico, list_cost_pico FROM ledger").fetchall())
    assert rows["before"] == (1, 150_000_000_000, 300_000_000_000)
    assert rows["after"] == (2, 100_000_000_000 + 10_000_000_000, 300_000_000_000 + 20_000_000_000)
    versions = client.get("/v1/rates", headers=auth(ADMIN)).json()["models"][0]["versions"]
    assert [v["effective_from"] for v in versions] == ["2025-01-01T00:00:00Z", "2026-11-25T00:00:00Z"]


def test_rate_versions_survive_a_restart(settings, store, client):
    from metering.store.db import Store

    client.post("/v1/rates", json=NEW, headers=auth(ADMIN))
    store.close()
    reopened = Store(settings.db_path)
    try:
        assert len(reopened.card.versions[MODEL]) == 2
    finally:
        reopened.close()


def test_the_same_effective_from_twice_is_a_conflict(client):
    assert client.post("/v1/rates", json=NEW, headers=auth(ADMIN)).status_code == 201
    r = client.post("/v1/rates", json=NEW, headers=auth(ADMIN))
    assert r.status_code == 409 and "already has a version" in r.json()["error"]["message"]


def test_an_invalid_version_names_the_field(client):
    bad = {**NEW, "output": {"current": 0.5, "list": "1.2"}}
    r = client.post("/v1/rates", json=bad, headers=auth(ADMIN))
    assert r.status_code == 422 and "'output'" in r.json()["error"]["message"]
    assert "decimal string" in r.json()["error"]["message"]
    r = client.post("/v1/rates", json={k: v for k, v in NEW.items() if k != "model"}, headers=auth(ADMIN))
    assert r.status_code == 422 and "model" in r.json()["error"]["message"]


def test_a_record_shows_its_version_and_cost_per_token_class(client, two_keys):
    from tests.conftest import SECRET_A, SECRET_B

    native = {"request_id": "w1", "occurred_at": "2026-11-25T10:00:00Z", "api_key_id": "key-a", "model": MODEL,
              "endpoint": "chat.completions",
              "usage": {"prompt_tokens": 2006, "completion_tokens": 300, "prompt_tokens_details": {"cached_tokens": 1920},
                        "completion_tokens_details": {"reasoning_tokens": 200}}}
    client.post("/v1/usage", json=native, headers=auth(INGEST))
    body = client.get("/v1/records/w1", headers=auth(SECRET_A)).json()
    assert body["rate_version"]["id"] == 1
    assert body["cost"] == {"uncached_input": "0.0000129", "cached_input": "0.0000576", "cache_write": "0",
                            "output": "0.00018", "thinking": "0.00012", "web_search": "0", "total": "0.0002505"}
    assert body["list_cost"]["total"] == "0.000501"
    assert body["record"]["input_tokens"] == 2006 and body["record"]["thinking_tokens"] == 200
    assert client.get("/v1/records/w1", headers=auth(SECRET_B)).status_code == 403
    assert client.get("/v1/records/w1", headers=auth(INGEST)).status_code == 403
    assert client.get("/v1/records/nope", headers=auth(ADMIN)).status_code == 404


def test_an_unpriced_record_has_no_cost(client):
    client.post("/v1/usage", json=record("u", model="mystery"), headers=auth(INGEST))
    body = client.get("/v1/records/u", headers=auth(ADMIN)).json()
    assert body["cost"] is None and body["rate_version"] is None and body["record"]["model"] == "mystery"
