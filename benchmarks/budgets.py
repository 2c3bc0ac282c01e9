"""Latency of GET /v1/budgets/status (the gateway's budget check) on a large ledger, beside
GET /healthz on the same server in the same run. Prints figures; asserts nothing.

    .venv/bin/python -m benchmarks.budgets [--rows 10000000] [--quick]
"""

from __future__ import annotations

import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from benchmarks.reports import build_ledger
from metering.services import budgets
from metering.services.context import Context
from metering.store.db import Store
from tests.conftest import INGEST, Server


def latencies(client: httpx.Client, path: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = client.get(path)
        out.append(time.perf_counter() - t0)
        assert r.status_code == 200, r.text
    return out


SIZES = {"smoke": 50_000, "quick": 1_000_000, "full": 10_000_000}


def prepare(db: Path, rows: int, amount: str = "1000") -> Path:
    """A ledger of `rows` records over the 30 days before now (as the server's clock sees it), key-0
    in acct-0, and 3 budgets with forecasts covering key-0: its own, its account's, everything."""
    base = (datetime.now(UTC) - timedelta(days=30)).replace(tzinfo=None).isoformat()
    with Store(db) as store:
        build_ledger(store, rows, base)
        store.add_key(api_key_id="key-0", account_id="acct-0", name=None, secret_sha256="0" * 64)
        ctx = Context(store)
        for scope in ({"api_key_id": "key-0"}, {"account_id": "acct-0"}, {"all": True}):
            budgets.create(ctx, body={"scope": scope, "amount": amount, "forecast": True})
    return db


def scenarios(size: str = "full", rows: int | None = None) -> list[dict]:
    rows = rows or SIZES[size]
    with tempfile.TemporaryDirectory() as tmp:
        db = prepare(Path(tmp) / "bench.duckdb", rows)
        server = Server(db).start()
        try:
            # The gateway's question before a call, asked as the gateway asks it (the ingest token).
            with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {INGEST}"}) as client:
                latencies(client, "/v1/budgets/status?api_key_id=key-0", 20)  # warm up
                n = 60 if size == "smoke" else 300
                ref = latencies(client, "/healthz", n)
                status = latencies(client, "/v1/budgets/status?api_key_id=key-0", n)
        finally:
            server.stop()

    def q(values: list[float], p: int) -> float:
        return statistics.quantiles(values, n=100)[p - 1] * 1000

    return [{
        "scenario": f"budget status (3 budgets with forecasts), {rows:,} records, sequential",
        "figure": f"p50 {q(status, 50):.1f} ms, p99 {q(status, 99):.1f} ms",
        "reference": f"GET /healthz: p50 {q(ref, 50):.1f} ms, p99 {q(ref, 99):.1f} ms",
        "values": {"rows": rows, "p50_ms": q(status, 50), "p99_ms": q(status, 99),
                   "reference_p50_ms": q(ref, 50), "reference_p99_ms": q(ref, 99)},
    }]


def main() -> None:
    from benchmarks.run import module_main

    module_main(scenarios)


if __name__ == "__main__":
    main()
