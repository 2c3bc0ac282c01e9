"""The overview's money is computed on the server (issue 12): cost per class priced by each record's
own rate version, cache savings, the month's projection; checked against hand-computed figures."""

from __future__ import annotations

from tests.conftest import ADMIN, INGEST, SECRET_A, auth, record


def test_overview_prices_each_class_with_the_records_own_version_and_projects_the_month(client, two_keys):
    # Before 2026-11-20: the seed card (input 0.15, cached 0.03, output 0.60). From then: a cheaper version.
    r = client.post("/v1/rates", headers=auth(ADMIN), json={
        "model": "minimax-m2-7", "effective_from": "2026-11-20T00:00:00Z", "input": {"current": "0.10", "list": "0.30"},
        "cached_input": {"current": "0.01", "list": "0.06"}, "output": {"current": "0.50", "list": "1.20"}})
    assert r.status_code == 201
    body = [record("o1", occurred_at="2026-11-10T10:00:00Z", input_tokens=1_000_000, cached_tokens=400_000,
                   output_tokens=100_000, thinking_tokens=40_000),
            record("o2", occurred_at="2026-11-24T10:00:00Z", input_tokens=1_000_000, cached_tokens=500_000,
                   output_tokens=200_000, thinking_tokens=None),
            record("o3", occurred_at="2026-11-24T11:00:00Z", api_key_id="key-b", input_tokens=5_000_000,
                   cached_tokens=0, output_tokens=0, thinking_tokens=None)]
    assert client.post("/v1/usage", json=body, headers=auth(INGEST)).status_code == 200
    ov = client.get("/v1/overview", headers=auth(SECRET_A)).json()
    classes = {c["token_class"]: c for c in ov["by_class"]["classes"]}
    # o1 at the seed: 600k x 0.15 + 400k x 0.03; o2 at the new version: 500k x 0.10 + 500k x 0.01
    assert classes["uncached_input"]["cost"] == "0.14"  # 0.09 + 0.05
    assert classes["cached_input"]["cost"] == "0.017"  # 0.012 + 0.005
    assert classes["output"]["cost"] == "0.136"  # 60k x 0.60 + 200k x 0.50
    assert classes["thinking"]["cost"] == "0.024"  # 40k x 0.60
    assert classes["cached_input"]["quantity"] == 900_000
    # What the cache saved: 400k x (0.15 - 0.03) + 500k x (0.10 - 0.01)
    assert ov["by_class"]["cache_savings"] == "0.093"
    assert ov["totals"]["cost"] == "0.317" and ov["month_to_date"] == "0.317"
    # The last 7 whole days (Nov 18..24) spent 0.155 (o2); 5 days are left after today (Nov 25) in November.
    assert ov["projected_month_end"] == "0.427714285714"  # 0.317 + 0.155 x 5 / 7, rounded down to the pico
    assert [k["api_key_id"] for k in ov["top_keys"]] == ["key-a"]  # a key sees itself alone
    admin = client.get("/v1/overview", headers=auth(ADMIN)).json()
    assert [k["api_key_id"] for k in admin["top_keys"]] == ["key-b", "key-a"]
