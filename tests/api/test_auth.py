"""Every route x every role: 401 / 403 / 2xx as the contract says; keys see only themselves."""

from __future__ import annotations

import itertools

import pytest

from tests.conftest import ADMIN, INGEST, SECRET_A, SECRET_B, auth, record

TOKENS = {"admin": ADMIN, "ingest": INGEST, "key_a": SECRET_A, "key_b": SECRET_B, "none": None,
          "wrong": "not-a-known-token-0123456789"}
_rate = itertools.count(1)


def new_rate() -> dict:
    return {"model": f"m-{next(_rate)}", "effective_from": "2026-01-01T00:00:00Z",
            "input": {"current": "1", "list": "2"}, "cached_input": {"current": "0.1", "list": "0.2"},
            "output": {"current": "3", "list": "4"}}


_ids = itertools.count(1)
ROUTES = [
    # (method, path, body factory, {role: expected status}); roles not named get 403, none/wrong get 401
    ("GET", "/healthz", None, {"admin": 200, "ingest": 200, "key_a": 200, "key_b": 200, "none": 200, "wrong": 200}),
    ("POST", "/v1/usage", lambda: record(f"auth-{next(_ids)}"), {"admin": 200, "ingest": 200}),
    ("GET", "/v1/usage", None, {"admin": 200, "key_a": 200, "key_b": 200}),
    ("GET", "/v1/usage?api_key_id=key-a", None, {"admin": 200, "key_a": 200}),
    ("GET", "/v1/usage?api_key_id=key-b", None, {"admin": 200, "key_b": 200}),
    ("GET", "/v1/keys", None, {"admin": 200}),
    ("POST", "/v1/keys", lambda: {"api_key_id": f"k-{next(_ids)}", "account_id": "a"}, {"admin": 201}),
    ("GET", "/v1/rates", None, {"admin": 200}),  # a key reads its own data, "nothing else"
    ("POST", "/v1/rates", new_rate, {"admin": 201}),
    ("GET", "/v1/unpriced", None, {"admin": 200}),
    ("GET", "/v1/records/seed-a", None, {"admin": 200, "key_a": 200}),
]
CASES = [(m, p, b, role, expected.get(role, 401 if role in ("none", "wrong") else 403))
         for m, p, b, expected in ROUTES for role in TOKENS]


@pytest.mark.parametrize(("method", "path", "body", "role", "status"), CASES,
                         ids=[f"{c[0]} {c[1]} as {c[3]}" for c in CASES])
def test_route_and_role(client, two_keys, method, path, body, role, status):
    client.post("/v1/usage", json=record("seed-a", api_key_id="key-a"), headers=auth(INGEST))
    headers = auth(TOKENS[role]) if TOKENS[role] else {}
    r = client.request(method, path, json=body() if body else None, headers=headers)
    assert r.status_code == status, r.text
    if status >= 400:
        assert set(r.json()) == {"error"} and set(r.json()["error"]) == {"code", "message"}


def test_key_a_never_sees_key_b_figures(client, two_keys):
    client.post("/v1/usage", json=[record("a1", api_key_id="key-a", input_tokens=111, cached_tokens=0),
                                   record("b1", api_key_id="key-b", input_tokens=999_999, cached_tokens=0)],
                headers=auth(INGEST))
    for query in ("", "?group_by=api_key_id", "?group_by=model,endpoint,tag:project", "?bucket=hour&start=2026-11-25"):
        body = client.get(f"/v1/usage{query}", headers=auth(SECRET_A)).json()
        assert body["totals"]["input_tokens"] == 111
        assert "999999" not in str(body) and "key-b" not in str(body)
    admin = client.get("/v1/usage", headers=auth(ADMIN)).json()
    assert admin["totals"]["input_tokens"] == 111 + 999_999


def test_malformed_authorization_header_is_401(client):
    for header in ("Basic abc", "Bearer", "Bearer  ", ADMIN):
        r = client.get("/v1/keys", headers={"Authorization": header})
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"


def test_key_secrets_are_stored_only_as_digests(client, store, two_keys):
    with store.reading() as cur:
        dump = str(cur.execute("SELECT * FROM api_keys").fetchall())
    assert SECRET_A not in dump and SECRET_B not in dump
    listed = client.get("/v1/keys", headers=auth(ADMIN)).json()
    assert SECRET_A not in str(listed) and "secret" not in str(listed)


def test_generated_secret_is_returned_once_and_works(client):
    r = client.post("/v1/keys", json={"api_key_id": "gen", "account_id": "acct"}, headers=auth(ADMIN))
    secret = r.json()["secret"]
    assert secret.startswith("sk_") and len(secret) > 30
    assert client.get("/v1/usage", headers=auth(secret)).status_code == 200
    again = client.post("/v1/keys", json={"api_key_id": "gen", "account_id": "acct"}, headers=auth(ADMIN))
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"


def test_key_registered_by_digest(client):
    import hashlib

    secret = "sk_registered_by_digest_0123456789"
    digest = hashlib.sha256(secret.encode()).hexdigest()
    r = client.post("/v1/keys", json={"api_key_id": "dig", "account_id": "a", "secret_sha256": digest},
                    headers=auth(ADMIN))
    assert r.status_code == 201 and "secret" not in r.json()
    assert client.get("/v1/usage", headers=auth(secret)).status_code == 200
