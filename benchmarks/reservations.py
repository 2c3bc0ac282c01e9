"""Reservations on the gateway's request path: POST /v1/reservations (3 enforced budgets covering the
key: its own, its account's, everything) p50/p99 beside GET /healthz, with no ingest and while
1,000-record batches arrive at half the server's measured capacity. Prints figures; asserts nothing.

    .venv/bin/python -m benchmarks.reservations [--rows 10000000] [--quick]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.budgets import prepare
from benchmarks.concurrent import percentile, while_ingesting
from metering.services import budgets
from metering.services.context import Context
from metering.store.db import Store
from tests.conftest import INGEST, Server

SIZES = {"smoke": 50_000, "quick": 1_000_000, "full": 10_000_000}
SECONDS = {"smoke": 1, "quick": 10, "full": 20}


def _reservations(url: str, seconds: float, prefix: str) -> tuple[list[float], list[float]]:
    """Sequential reservations and health checks, one client, for `seconds`."""
    held, health = [], []
    with httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {INGEST}"}) as client:
        deadline = time.perf_counter() + seconds
        i = 0
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            r = client.post("/v1/reservations", json={"request_id": f"{prefix}-{i}", "api_key_id": "key-0",
                                                      "model": "minimax-m2-7", "max_input_tokens": 2000,
                                                      "max_output_tokens": 500})
            held.append(time.perf_counter() - t0)
            if r.status_code != 200 or r.json()["decision"] != "allow":
                raise RuntimeError(r.text[:300])
            t0 = time.perf_counter()
            client.get("/healthz")
            health.append(time.perf_counter() - t0)
            i += 1
    return held, health


def scenarios(size: str = "full", rows: int | None = None) -> list[dict]:
    rows = rows or SIZES[size]
    seconds = SECONDS[size]
    with tempfile.TemporaryDirectory() as tmp:
        db = prepare(Path(tmp) / "bench.duckdb", rows, amount="9000000")
        with Store(db) as store:
            ctx = Context(store)
            for scope in ({"api_key_id": "key-0"}, {"account_id": "acct-0"}, {"all": True}):
                budgets.create(ctx, body={"scope": scope, "amount": "9000000", "enforce": True})
        server = Server(db).start()
        try:
            _reservations(server.url, 1, "warm")
            quiet, quiet_health = _reservations(server.url, seconds, "idle")
            (busy, busy_health), rate, capacity = while_ingesting(
                server.url, seconds, 7, lambda: _reservations(server.url, seconds, "busy"))
        finally:
            server.stop()
    return [{
        "scenario": f"a reservation (POST /v1/reservations, 3 enforced budgets), {rows:,} records",
        "figure": f"idle p50 {percentile(quiet, 50):.1f} ms, p99 {percentile(quiet, 99):.1f} ms; while ingest runs at half "
                  f"capacity ({rate:,.0f} of {capacity:,.0f} records/s) p50 {percentile(busy, 50):.1f} ms, "
                  f"p99 {percentile(busy, 99):.1f} ms ({percentile(busy, 99) / percentile(quiet, 99):.1f}x idle)",
        "reference": f"GET /healthz in the same loop: idle p99 {percentile(quiet_health, 99):.1f} ms, under ingest "
                     f"p99 {percentile(busy_health, 99):.1f} ms",
        "values": {"rows": rows, "idle_p50_ms": percentile(quiet, 50), "idle_p99_ms": percentile(quiet, 99),
                   "busy_p50_ms": percentile(busy, 50), "busy_p99_ms": percentile(busy, 99),
                   "health_idle_p99_ms": percentile(quiet_health, 99), "health_busy_p99_ms": percentile(busy_health, 99),
                   "ingest_records_per_s": rate, "capacity_records_per_s": capacity},
    }]


def main() -> None:
    from benchmarks.run import module_main

    module_main(scenarios)


if __name__ == "__main__":
    main()
