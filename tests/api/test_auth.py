"""Every route x every role: 401 / 403 / 2xx as the contract says; keys see only themselves."""

from __future__ import annotations

import itertools

import pytest

from tests.conftest import ADMIN, INGEST, METRICS, SECRET_A, SECRET_B, api_routes, auth, record

TOKENS = {"admin": ADMIN, "ingest": INGEST, "key_a": SECRET_A, "key_b": SECRET_B, "metrics": METRICS, "none": None,
          "wrong": "not-a-known-token-0123456789"}
_rate = itertools.count(1)


def new_rate() -> dict:
    return {"model": f"m-{next(_rate)}", "effective_from": "2026-01-01T00:00:00Z",
            "input": {"current": "1", "list": "2"}, "cached_input": {"current": "0.1", "list": "0.2"},
            "output": {"current": "3", "list": "4"}}


_ids = itertools.count(1)
ALL = {"admin": 200, "ingest": 200, "key_a": 200, "key_b": 200, "metrics": 200, "none": 200, "wrong": 200}
ROUTES = [
    # (method, route template, concrete path, body factory, {role: status}); roles not named get 403,
    # and no token or an unknown one gets 401.
    ("GET", "/healthz", "/healthz", None, ALL),
    ("GET", "/v1/me", "/v1/me", None, {"admin": 200, "ingest": 200, "key_a": 200, "key_b": 200}),
    ("POST", "/v1/usage", "/v1/usage", lambda: record(f"auth-{next(_ids)}"), {"admin": 200, "ingest": 200}),
    ("POST", "/v1/traces", "/v1/traces", lambda: {"resourceSpans": []}, {"admin": 200, "ingest": 200}),
    ("GET", "/v1/usage", "/v1/usage", None, {"admin": 200, "key_a": 200, "key_b": 200}),
    ("GET", "/v1/usage", "/v1/usage?api_key_id=key-a", None, {"admin": 200, "key_a": 200}),
    ("GET", "/v1/usage", "/v1/usage?api_key_id=key-b", None, {"admin": 200, "key_b": 200}),
    ("GET", "/v1/overview", "/v1/overview", None, {"admin": 200, "key_a": 200, "key_b": 200}),
    ("GET", "/v1/overview", "/v1/overview?api_key_id=key-b", None, {"admin": 200, "key_b": 200}),
    ("GET", "/v1/keys", "/v1/keys", None, {"admin": 200}),
    ("POST", "/v1/keys", "/v1/keys", lambda: {"api_key_id": f"k-{next(_ids)}", "account_id": "a"}, {"admin": 201}),
    ("GET", "/v1/rates", "/v1/rates", None, {"admin": 200}),  # a key reads its own data, "nothing else"
    ("POST", "/v1/rates", "/v1/rates", new_rate, {"admin": 201}),
    ("GET", "/v1/unpriced", "/v1/unpriced", None, {"admin": 200}),
    ("GET", "/v1/records/{request_id}", "/v1/records/seed-a", None, {"admin": 200, "key_a": 200}),
    ("GET", "/v1/reports/daily", "/v1/reports/daily", None, {"admin": 200}),
    ("GET", "/v1/reports/statement", "/v1/reports/statement?account=acct-1&month=2026-11", None, {"admin": 200}),
    ("GET", "/v1/reports/focus", "/v1/reports/focus?start=2026-11-01&end=2026-11-26", None, {"admin": 200}),
    ("POST", "/v1/reprice", "/v1/reprice", lambda: {"start": "2026-11-01", "end": "2026-12-01", "dry_run": True},
     {"admin": 200}),
    ("GET", "/v1/reprice", "/v1/reprice", None, {"admin": 200}),
    ("POST", "/v1/reconcile", "/v1/reconcile?provider=openai&start=2026-11-01&end=2026-11-02",
     lambda: {"object": "page", "data": [], "has_more": False, "next_page": None}, {"admin": 200}),
    ("POST", "/v1/periods/close", "/v1/periods/close", lambda: {"month": "2026-10"}, {"admin": 200}),
    ("GET", "/v1/periods", "/v1/periods", None, {"admin": 200}),
    ("POST", "/v1/budgets", "/v1/budgets", lambda: {"scope": {"all": True}, "amount": "5"}, {"admin": 201}),
    ("GET", "/v1/budgets", "/v1/budgets", None, {"admin": 200, "key_a": 200, "key_b": 200}),
    ("GET", "/v1/budgets/status", "/v1/budgets/status?api_key_id=key-a", None,
     {"admin": 200, "ingest": 200, "key_a": 200}),  # the gateway reads it to enforce limits
    ("POST", "/v1/budgets/check", "/v1/budgets/check", None, {"admin": 200}),
    ("GET", "/v1/budgets/{budget_id}", "/v1/budgets/{budget_a}", None, {"admin": 200, "key_a": 200}),
    ("GET", "/v1/budgets/{budget_id}/status", "/v1/budgets/{budget_a}/status", None, {"admin": 200, "key_a": 200}),
    ("DELETE", "/v1/budgets/{budget_id}", "/v1/budgets/{budget_a}", None, {"admin": 204}),
    ("GET", "/v1/alerts", "/v1/alerts", None, {"admin": 200, "key_a": 200, "key_b": 200}),
    ("POST", "/v1/reservations", "/v1/reservations",
     lambda: {"request_id": f"res-{next(_ids)}", "api_key_id": "key-a", "model": "minimax-m2-7",
              "max_output_tokens": 10}, {"admin": 200, "ingest": 200}),
    ("GET", "/v1/reservations/{request_id}", "/v1/reservations/res-seed", None, {"admin": 200, "ingest": 200}),
    ("DELETE", "/v1/reservations/{request_id}", "/v1/reservations/res-seed", None, {"admin": 200, "ingest": 200}),
    ("GET", "/metrics", "/metrics", None, {"admin": 200, "metrics": 200}),  # the scraper's token: this route only
]
CASES = [(m, path, b, role, expected.get(role, 401 if role in ("none", "wrong") else 403))
         for m, _, path, b, expected in ROUTES for role in TOKENS]


@pytest.mark.parametrize(("method", "path", "body", "role", "status"), CASES,
                         ids=[f"{c[0]} {c[1]} as {c[3]}" for c in CASES])
def test_route_and_role(client, two_keys, method, path, body, role, status):
    client.post("/v1/usage", json=record("seed-a", api_key_id="key-a"), headers=auth(INGEST))
    client.post("/v1/reservations", json={"request_id": "res-seed", "api_key_id": "key-a", "model": "minimax-m2-7",
                                          "max_output_tokens": 10}, headers=auth(INGEST))
    budget = client.post("/v1/budgets", json={"scope": {"api_key_id": "key-a"}, "amount": "5"}, headers=auth(ADMIN))
    path = path.replace("{budget_a}", budget.json()["id"])
    headers = auth(TOKENS[role]) if TOKENS[role] else {}
    r = client.request(method, path, json=body() if body else None, headers=headers)
    assert r.status_code == status, r.text
    if status >= 400:
        assert set(r.json()) == {"error"} and set(r.json()["error"]) == {"code", "message"}


def test_every_route_of_the_app_has_an_auth_rule_in_this_table(client):
    """A new route without a row above fails here."""
    covered = {(m, template) for m, template, *_ in ROUTES}
    routes = api_routes(client.app)
    assert len(routes) > 20  # the walk finds the routers' routes
    for route in routes:
        if route.include_in_schema:
            for method in route.methods - {"HEAD"}:
                assert (method, route.path) in covered, f"{method} {route.path} has no auth rule in ROUTES"


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
