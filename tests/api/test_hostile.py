"""Hostile input: bodies that try to break the parser, SQL-injection payloads in every parameter,
and webhook URLs aimed at metadata services. None gets a 500; nothing already stored is harmed."""

from __future__ import annotations

import pytest

from tests.conftest import ADMIN, INGEST, auth, record

HOSTILE_BODIES = [
    ("deep nesting", b"[" * 5000 + b"]" * 5000),
    ("NaN", b'{"request_id": "n", "input_tokens": NaN}'),
    ("Infinity", b'[{"request_id": "i", "input_tokens": Infinity}]'),
    ("huge integer", b'{"request_id": "h", "occurred_at": "2026-11-25T10:00:00Z", "api_key_id": "k", "model": "m", '
                     b'"input_tokens": 123456789012345678901234567890, "output_tokens": 1}'),
    ("invalid UTF-8", b'{"request_id": "\xff\xfe", "input_tokens": 1}'),
    ("empty", b""),
    ("lone surrogate", b'{"request_id": "\\ud800"}'),
]


@pytest.mark.parametrize(("case", "body"), HOSTILE_BODIES, ids=[c for c, _ in HOSTILE_BODIES])
def test_hostile_bodies_get_a_clear_4xx_and_never_a_500(client, store, case, body):
    client.post("/v1/usage", json=record("kept"), headers=auth(INGEST))
    for content_type in ("application/json", "application/x-ndjson"):
        r = client.post("/v1/usage", content=body, headers={**auth(INGEST), "Content-Type": content_type})
        assert 400 <= r.status_code < 500, (case, r.status_code, r.text)
        assert "error" in r.json() or r.json()["rejected"] >= 1
    with store.reading() as cur:
        assert cur.execute("SELECT request_id FROM ledger").fetchall() == [("kept",)]


def test_duplicate_json_keys_take_the_last_value(client, store):
    body = (b'{"request_id": "d", "occurred_at": "2026-11-25T10:00:00Z", "api_key_id": "k", "model": "m", '
            b'"input_tokens": 1, "input_tokens": 5, "output_tokens": 1}')
    assert client.post("/v1/usage", content=body, headers=auth(INGEST)).status_code == 200
    with store.reading() as cur:
        assert cur.execute("SELECT input_tokens FROM ledger").fetchall() == [(5,)]


INJECTIONS = ["model; DROP TABLE ledger", "tag:x') OR 1=1 --", "api_key_id,(SELECT 1)", "tag:a]['b",
              "model UNION SELECT * FROM api_keys", "\"model\"", "tag:" + "x" * 65]


@pytest.mark.parametrize("payload", INJECTIONS)
def test_sql_injection_in_column_parameters_is_refused(client, store, payload):
    client.post("/v1/usage", json=record("kept"), headers=auth(INGEST))
    for path in ("/v1/usage", "/v1/reports/daily"):
        r = client.get(path, params={"group_by": payload}, headers=auth(ADMIN))
        assert r.status_code == 400 and "group_by" in r.json()["error"]["message"]
    with store.reading() as cur:
        assert cur.execute("SELECT count(*) FROM ledger").fetchall() == [(1,)]


@pytest.mark.parametrize("payload", ["'; DROP TABLE ledger; --", "key-a' OR '1'='1", "x\\u0000y"])
def test_sql_injection_in_values_is_only_a_value(client, store, payload):
    client.post("/v1/usage", json=record("kept"), headers=auth(INGEST))
    r = client.get("/v1/usage", params={"api_key_id": payload}, headers=auth(ADMIN))
    assert r.status_code == 200 and r.json()["totals"]["requests"] == 0
    for params in ({"tz": payload}, {"start": payload}, {"bucket": payload}):
        assert client.get("/v1/usage", params=params, headers=auth(ADMIN)).status_code == 400
    assert client.get("/v1/reports/statement", params={"account": payload, "month": "2026-11"},
                      headers=auth(ADMIN)).status_code == 200
    with store.reading() as cur:
        assert cur.execute("SELECT count(*) FROM ledger").fetchall() == [(1,)]


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data/", "http://[fe80::1]/x",
                                 "http://metadata.google.internal/computeMetadata/v1/", "http://[fd00:ec2::254]/",
                                 "file:///etc/passwd", "gopher://127.0.0.1/"])
def test_webhook_urls_to_metadata_and_link_local_addresses_are_refused(client, url):
    r = client.post("/v1/budgets", json={"scope": {"all": True}, "amount": "1", "webhook_url": url},
                    headers=auth(ADMIN))
    assert r.status_code == 400 and "webhook_url" in r.json()["error"]["message"]


def test_link_local_webhooks_can_be_allowed_by_setting(settings, store):
    from dataclasses import replace

    from fastapi.testclient import TestClient

    from metering.api.app import create_app

    with TestClient(create_app(replace(settings, webhook_allow_link_local=True), store=store)) as c:
        r = c.post("/v1/budgets", json={"scope": {"all": True}, "amount": "1",
                                        "webhook_url": "http://169.254.10.10/hook"}, headers=auth(ADMIN))
        assert r.status_code == 201
