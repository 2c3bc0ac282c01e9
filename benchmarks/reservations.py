"""Reservations on the gateway's request path: POST /v1/reservations (3 enforced budgets covering the
key: its own, its account's, everything) p50/p99 beside GET /healthz, with no ingest and while
1,000-record batches arrive at half the server's measured capacity. Prints figures; asserts nothing.

    .venv/bin/python -m benchmarks.reservations [--rows 10000000] [--quick]
"""

from __future__ import annotations

import multiprocessing
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson

from benchmarks.budgets import prepare
from benchmarks.concurrent import BATCH, _paced_ingest, _q
from benchmarks.loadgen import load
from metering.services import budgets
from metering.services.context import Context
from metering.store.db import Store
from tests.conftest import INGEST, Server, generate_records

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
            now = datetime.now(UTC)
            probe = generate_records(40 * BATCH, seed=3, prefix="cap", start=now - timedelta(hours=2),
                                     span=timedelta(hours=1))
            elapsed, _ = load(server.url, "POST", "/v1/usage", INGEST,
                              [orjson.dumps(probe[i:i + BATCH]) for i in range(0, len(probe), BATCH)], connections=4)
            capacity = len(probe) / elapsed
            done: multiprocessing.Queue = multiprocessing.Queue()
            writer = multiprocessing.Process(target=_paced_ingest, args=(server.url, capacity / 2, seconds + 1, 7, done))
            writer.start()
            time.sleep(0.5)
            busy, busy_health = _reservations(server.url, seconds, "busy")
            sent, sent_seconds = done.get(timeout=600)
            writer.join()
        finally:
            server.stop()
    return [{
        "scenario": f"a reservation (POST /v1/reservations, 3 enforced budgets), {rows:,} records",
        "figure": f"idle p50 {_q(quiet, 50):.1f} ms, p99 {_q(quiet, 99):.1f} ms; while ingest runs at half capacity "
                  f"({sent / sent_seconds:,.0f} of {capacity:,.0f} records/s) p50 {_q(busy, 50):.1f} ms, "
                  f"p99 {_q(busy, 99):.1f} ms ({_q(busy, 99) / _q(quiet, 99):.1f}x idle)",
        "reference": f"GET /healthz in the same loop: idle p99 {_q(quiet_health, 99):.1f} ms, under ingest "
                     f"p99 {_q(busy_health, 99):.1f} ms",
        "values": {"rows": rows, "idle_p50_ms": _q(quiet, 50), "idle_p99_ms": _q(quiet, 99),
                   "busy_p50_ms": _q(busy, 50), "busy_p99_ms": _q(busy, 99),
                   "health_idle_p99_ms": _q(quiet_health, 99), "health_busy_p99_ms": _q(busy_health, 99),
                   "ingest_records_per_s": sent / sent_seconds, "capacity_records_per_s": capacity},
    }]


def main() -> None:
    from benchmarks.run import module_main

    module_main(scenarios)


if __name__ == "__main__":
    main()
