"""A million generated records through POST /v1/usage: GET /v1/usage totals equal the exact
sum computed independently with Decimal from the rate page's prices."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from tests.conftest import ADMIN, INGEST, MODEL, auth, generate_records

pytestmark = pytest.mark.slow

# The rate page: USD per 1M tokens, current and list; thinking billed as output.
PAGE = {"input": (Decimal("0.15"), Decimal("0.30")), "cached": (Decimal("0.03"), Decimal("0.06")),
        "output": (Decimal("0.60"), Decimal("1.20"))}
MILLION = Decimal(1_000_000)


def expected_cost(r: dict, basis: int) -> Decimal:
    if r["model"] != MODEL:
        return Decimal(0)
    uncached = r["input_tokens"] - r["cached_tokens"] - r["cache_write_tokens"]
    return (Decimal(uncached + r["cache_write_tokens"]) * PAGE["input"][basis]
            + Decimal(r["cached_tokens"]) * PAGE["cached"][basis]
            + Decimal(r["output_tokens"]) * PAGE["output"][basis]) / MILLION


def test_a_million_records_total_exactly(client):
    n = 1_000_000
    records = generate_records(n, seed=2026, keys=50)
    for i in range(0, n, 10_000):
        r = client.post("/v1/usage", content=orjson.dumps(records[i:i + 10_000]),
                        headers={**auth(INGEST), "Content-Type": "application/json"})
        assert r.status_code == 200 and r.json()["accepted"] == 10_000, r.text[:300]
    cost = sum((expected_cost(r, 0) for r in records), Decimal(0))
    list_cost = sum((expected_cost(r, 1) for r in records), Decimal(0))

    body = client.get("/v1/usage", params={"start": "2026-10-01", "end": "2026-12-01", "bucket": "month",
                                           "group_by": "model,api_key_id"}, headers=auth(ADMIN)).json()
    assert body["totals"]["requests"] == n
    assert Decimal(body["totals"]["cost"]) == cost
    assert Decimal(body["totals"]["list_cost"]) == list_cost
    assert body["totals"]["input_tokens"] == sum(r["input_tokens"] for r in records)
    assert body["totals"]["output_tokens"] == sum(r["output_tokens"] for r in records)
    # The group rows add up to the totals exactly too.
    rows = [x for b in body["buckets"] for x in b["results"]]
    assert sum((Decimal(x["cost"]) for x in rows if x["cost"] is not None), Decimal(0)) == cost
    assert all(x["unpriced_requests"] == x["requests"] for x in rows if x["cost"] is None)  # issue 14: null, not 0
    # And the ledger path (a tag group forces it) agrees with the rollup to the last digit.
    by_tag = client.get("/v1/usage", params={"start": "2026-10-01", "end": "2026-12-01", "bucket": "month",
                                             "group_by": "tag:project"}, headers=auth(ADMIN)).json()
    assert by_tag["totals"] == body["totals"]
