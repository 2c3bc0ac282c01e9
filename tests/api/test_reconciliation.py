"""On a generated ledger of a million records (several models, price versions, keys, accounts), the
daily report (in three time zones), the statements' unrounded totals, the FOCUS BilledCost sum,
the usage API totals and the ledger sum are all equal, exactly; and list prices agree the same way."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import polars as pl
import pytest

from metering.ratecard import parse_version
from metering.records import parse_record
from metering.services import ingest, reports
from metering.services.reports import LedgerSource
from tests.conftest import ADMIN, NOW, auth

pytestmark = pytest.mark.slow
N = 1_000_000
ACCOUNTS = [f"acct-{i}" for i in range(5)]
MODELS = ["minimax-m2-7", "model-b", "unpriced-model"]
START = datetime(2026, 9, 10, tzinfo=UTC)
SPAN = int((datetime(2026, 11, 24, tzinfo=UTC) - START).total_seconds())


def price(cur: str, lst: str) -> dict:
    return {"current": cur, "list": lst}


def build_ledger(ctx) -> None:
    store = ctx.store
    for i in range(25):  # keys 25..29 stay unregistered: account "unassigned"
        store.add_key(api_key_id=f"key-{i}", account_id=ACCOUNTS[i % 5], name=f"Key {i}", secret_sha256=f"{i:064x}")
    for model, start, p in [
        ("minimax-m2-7", "2026-10-15T00:00:00Z", ("0.12", "0.30", "0.025", "0.06", "0.55", "1.20")),
        ("model-b", "2026-09-01T00:00:00Z", ("1.1", "2.2", "0.11", "0.22", "4.4", "8.8")),
        ("model-b", "2026-11-01T00:00:00Z", ("0.9", "2.2", "0.09", "0.22", "3.3", "8.8")),
    ]:
        store.add_rate_version(parse_version(model, {
            "effective_from": start, "input": price(p[0], p[1]), "cached_input": price(p[2], p[3]),
            "output": price(p[4], p[5]), "web_search": price("10", "12")}, "test"))
    rng = random.Random(1_000_000)
    batch = []
    for i in range(N):
        input_tokens = int(rng.paretovariate(1.3) * 300)
        cached = rng.randint(0, input_tokens) if rng.random() < 0.5 else 0
        output = int(rng.paretovariate(1.6) * 80)
        batch.append(parse_record({
            "request_id": f"rec-{i}",
            "occurred_at": (START + timedelta(seconds=rng.randrange(SPAN))).isoformat(),
            "api_key_id": f"key-{min(int(rng.paretovariate(0.8)) - 1, 29)}",
            "model": rng.choice(MODELS),
            "input_tokens": input_tokens, "cached_tokens": cached,
            "cache_write_tokens": rng.randint(0, input_tokens - cached) if rng.random() < 0.05 else 0,
            "output_tokens": output, "thinking_tokens": rng.randint(0, output) if rng.random() < 0.6 else None,
            "web_search_requests": 1 if rng.random() < 0.01 else 0,
        }, now=NOW))
        if len(batch) == 20_000:
            assert all(o.status == "accepted" for o in ingest.ingest_records(ctx, batch))
            batch = []


def test_every_view_reconciles_with_the_ledger_to_the_last_digit(client, store, ctx):
    build_ledger(ctx)
    source = LedgerSource(ctx)
    with store.reading() as cur:
        n, cost_pico, list_pico = cur.execute(
            "SELECT count(*), sum(cost_pico), sum(list_cost_pico) FROM ledger").fetchone()
    assert n == N
    cost, list_cost = Decimal(cost_pico).scaleb(-12), Decimal(list_pico).scaleb(-12)

    # The daily report, in three time zones.
    for tz in ("UTC", "America/New_York", "Asia/Kolkata"):
        doc = reports.daily_report(source, now=NOW, start="2026-09-01", end="2026-12-01", tz=tz)
        totals = doc.frame.filter(pl.col("row_type") == "total").row(0, named=True)
        assert (totals["cost"], totals["list_cost"], totals["requests"]) == (cost, list_cost, N), tz
        days = doc.frame.filter(pl.col("row_type") == "day")
        assert days["cost"].sum() == cost

    # The statements of every account and month, before rounding.
    statement_cost = statement_list = Decimal(0)
    for account in [*ACCOUNTS, "unassigned"]:
        for month in ("2026-09", "2026-10", "2026-11"):
            doc = reports.statement(source, account=account, month=month)
            statement_cost += doc.meta["totals"]["amount"]
            statement_list += doc.meta["totals"]["list_amount"]
            assert sum(doc.frame["amount_rounded"].to_list(), Decimal(0)) == doc.meta["totals"]["amount_rounded"]
    assert (statement_cost, statement_list) == (cost, list_cost)

    # FOCUS.
    focus = reports.focus_export(source, start="2026-09-01", end="2026-12-01").frame
    assert (focus["BilledCost"].sum(), focus["ListCost"].sum()) == (cost, list_cost)

    # The usage API.
    body = client.get("/v1/usage", params={"start": "2026-09-01", "end": "2026-12-01", "bucket": "month",
                                           "tz": "Asia/Kolkata"}, headers=auth(ADMIN)).json()
    assert (Decimal(body["totals"]["cost"]), Decimal(body["totals"]["list_cost"])) == (cost, list_cost)
    assert body["totals"]["requests"] == N
