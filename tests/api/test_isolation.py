"""Tenant isolation by difference (issue 11): every route a key may call, called as key A before and
after key B (another account) spends, answers the same (but for `exceeded` flags of wider budgets),
and never names B.

The routes and their parameters are generated from the app's route table: a route whose auth rule
admits the key role is called with every path parameter A could use and the query parameters it
declares, so a new route is covered without anyone adding it here.
"""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

from metering.access import KEY
from tests.conftest import ADMIN, INGEST, NOW, SECRET_A, SECRET_B, api_routes, auth, record

B_NAMES = ("key-b", "acct-2", "b-secret-project")  # B's key, account and a tag value only B uses


def spend(client, key: str, n: int, *, day: int, tokens: int, tag: str = "shared", prefix: str = "") -> list[str]:
    at = (NOW - timedelta(days=day, hours=1)).isoformat()
    ids = [f"{prefix}{key}-{day}-{i}" for i in range(n)]
    body = [record(rid, api_key_id=key, occurred_at=at, input_tokens=tokens, cached_tokens=0, output_tokens=tokens // 4,
                   tags={"project": tag}) for rid in ids]
    r = client.post("/v1/usage", json=body, headers=auth(INGEST))
    assert r.status_code == 200, r.text
    return ids


def budget(client, scope: dict, amount: str, **fields: Any) -> str:
    r = client.post("/v1/budgets", json={"scope": scope, "amount": amount, "forecast": True, **fields},
                    headers=auth(ADMIN))
    assert r.status_code == 201, r.text
    return r.json()["id"]


def key_routes(app) -> list:
    routes = []
    for route in api_routes(app):
        if not route.include_in_schema:
            continue
        roles = set().union(*(getattr(d.call, "roles", set()) for d in route.dependant.dependencies))
        if KEY in roles:
            routes.append(route)
    assert {r.path for r in routes} >= {"/v1/usage", "/v1/budgets", "/v1/alerts", "/v1/budgets/status"}
    return routes


QUERY_VALUES: dict[str, list[Any]] = {
    "api_key_id": ["key-a"],
    "group_by": ["model", "api_key_id", "account_id", "endpoint", "tag:project", "model,api_key_id,account_id,tag:project"],
    "bucket": ["hour", "day", "month"],
    "tz": ["Asia/Kolkata", "America/New_York"],
    "start": [(NOW - timedelta(days=20)).date().isoformat()],
    "end": [(NOW + timedelta(days=1)).date().isoformat()],
}


def calls(app, path_values: dict[str, list[str]]) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, query) for every key route: each path value, defaults, then one query parameter
    varied at a time (over a window that holds both spends)."""
    out = []
    for route in key_routes(app):
        names = [p.name for p in route.dependant.path_params]
        choices = [path_values[n] for n in names]
        query_names = [p.name for p in route.dependant.query_params]
        window = {n: QUERY_VALUES[n][0] for n in ("start", "end") if n in query_names}
        for combo in itertools.product(*choices):
            path = route.path
            for name, value in zip(names, combo, strict=True):
                path = path.replace("{" + name + "}", value)
            for method in sorted(route.methods - {"HEAD"}):
                out.append((method, path, {}))
                out.append((method, path, dict(window)))
                for name in query_names:
                    for value in QUERY_VALUES.get(name, []):
                        out.append((method, path, {**window, name: value}))
    return out


def without_exceeded(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_exceeded(v) for k, v in value.items() if k != "exceeded"}
    if isinstance(value, (list, tuple)):
        return [without_exceeded(v) for v in value]
    return value


def snapshot(client, plan) -> dict[tuple, tuple[int, Any]]:
    out = {}
    for method, path, query in plan:
        r = client.request(method, path, params=query, headers=auth(SECRET_A))
        assert r.status_code < 500, (path, query, r.text)
        out[(method, path, tuple(sorted(query.items())))] = (r.status_code, r.json() if r.content else None)
    return out


def test_another_keys_spending_never_changes_what_a_key_reads(client, two_keys):
    # A's own usage, and B's history: 14 quiet days, so B's spike today is an anomaly.
    a_ids = spend(client, "key-a", 5, day=2, tokens=100_000)
    for day in range(1, 15):
        spend(client, "key-b", 2, day=day, tokens=10_000, tag="b-secret-project", prefix="hist-")
    b_old = spend(client, "key-b", 1, day=3, tokens=10_000, prefix="old-")
    budgets = {
        "a_own": budget(client, {"api_key_id": "key-a"}, "100"),
        "a_account": budget(client, {"account_id": "acct-1"}, "100"),
        "all": budget(client, {"all": True}, "1.00", webhook_url="http://127.0.0.1:9/hook"),
        "tag": budget(client, {"tag": {"project": "shared"}}, "1.00"),
        "b_own": budget(client, {"api_key_id": "key-b"}, "1.00", webhook_url="http://127.0.0.1:9/b"),
        "b_account": budget(client, {"account_id": "acct-2"}, "1.00"),
    }
    assert client.post("/v1/budgets/check", headers=auth(ADMIN)).status_code == 200

    path_values = {"budget_id": [*list(budgets.values()), "bud_does_not_exist"],
                   "request_id": [*a_ids[:2], b_old[0], "no-such-request"]}
    plan = calls(client.app, path_values)
    assert len(plan) > 50
    before = snapshot(client, plan)

    # B spends: a spike (an anomaly), crossing the budget over everything, the shared tag's, its own.
    spend(client, "key-b", 40, day=0, tokens=1_000_000)
    spend(client, "key-b", 5, day=0, tokens=1_000_000, tag="b-secret-project", prefix="x-")
    written = client.post("/v1/budgets/check", headers=auth(ADMIN)).json()["alerts_written"]
    assert any(k.startswith("anomaly:key-b") for k in written)
    assert any(k.startswith(f"threshold:{budgets['all']}") for k in written)
    assert any(k.startswith(f"threshold:{budgets['tag']}") for k in written)
    admin_alerts = client.get("/v1/alerts", headers=auth(ADMIN)).json()["data"]
    anomaly = next(a for a in admin_alerts if a["type"] == "spend.anomaly")
    assert anomaly["api_key_id"] == "key-b" and anomaly["budget_id"] == budgets["b_own"]  # the most specific

    after = snapshot(client, plan)
    changed = [k for k in plan_keys(plan) if without_exceeded(before[k]) != without_exceeded(after[k])]
    assert changed == [], changed[:3]
    flipped = [k for k in plan_keys(plan) if before[k] != after[k]]
    assert flipped, "B's spending should flip `exceeded` of the wider budgets A sees (else this test is blind)"
    for key, (status, body) in after.items():
        text = str(body)
        for name in (*B_NAMES, budgets["b_own"], budgets["b_account"], "127.0.0.1:9", "whsec_"):
            assert name not in text, (key, name, text[:300])

    # The same reads as B do show B's spend: the test is not blind.
    b_status = client.get("/v1/budgets/status", headers=auth(SECRET_B)).json()
    assert any(s.get("exceeded") for s in b_status["budgets"])


def plan_keys(plan) -> list[tuple]:
    return [(m, p, tuple(sorted(q.items()))) for m, p, q in plan]


def test_a_key_sees_its_own_budget_whole_and_a_wider_one_only_as_its_terms_exceeded_and_its_own_spend(
        client, two_keys):
    spend(client, "key-a", 2, day=0, tokens=1_000_000)
    spend(client, "key-b", 3, day=0, tokens=1_000_000)
    own = budget(client, {"api_key_id": "key-a"}, "100", webhook_url="http://user:pw@127.0.0.1:9/own")
    wide = budget(client, {"all": True}, "0.50")
    status = client.get("/v1/budgets/status", headers=auth(SECRET_A)).json()
    by_id = {s["budget_id"]: s for s in status["budgets"]}
    assert {"spent", "remaining", "fraction", "projected", "amount"} <= set(by_id[own])
    assert by_id[own]["key_spent"] == by_id[own]["spent"]
    assert set(by_id[wide]) == {"budget_id", "scope", "period", "tz", "basis", "enforce", "period_start",
                                "period_end", "thresholds", "exceeded", "key_spent"}
    assert by_id[wide]["exceeded"] is True and status["exceeded"] is True
    # A's own spend in the window: 2 x (1M input at 0.15 + 250k output at 0.60) = 0.6
    assert by_id[wide]["key_spent"] == "0.6"
    for path in ("/v1/budgets", f"/v1/budgets/{own}", f"/v1/budgets/{wide}", f"/v1/budgets/{wide}/status"):
        text = client.get(path, headers=auth(SECRET_A)).text
        assert "127.0.0.1" not in text and "webhook" not in text and "whsec" not in text, (path, text)
    # Admin and the gateway see every figure of the wider budget; admin also A's share of it.
    for token in (ADMIN, INGEST):
        full = client.get("/v1/budgets/status", params={"api_key_id": "key-a"}, headers=auth(token)).json()
        wide_full = next(s for s in full["budgets"] if s["budget_id"] == wide)
        assert wide_full["spent"] == "1.5" and "projected" in wide_full and "remaining" in wide_full
        assert wide_full.get("key_spent") == ("0.6" if token == ADMIN else None)
    assert "webhook_url" in client.get(f"/v1/budgets/{own}", headers=auth(ADMIN)).json()


def test_a_tag_budget_covers_a_key_once_it_spends_under_the_tag(client, two_keys):
    tag = budget(client, {"tag": {"project": "shared"}}, "10")
    assert client.get(f"/v1/budgets/{tag}", headers=auth(SECRET_A)).status_code == 403
    spend(client, "key-a", 1, day=0, tokens=1_000_000)  # under project=shared
    spend(client, "key-b", 1, day=0, tokens=1_000_000)
    seen = client.get(f"/v1/budgets/{tag}/status", headers=auth(SECRET_A)).json()
    assert seen["key_spent"] == "0.3" and "spent" not in seen and seen["exceeded"] is False
