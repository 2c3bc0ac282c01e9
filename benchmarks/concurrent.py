"""Reads while ingest runs: a key's usage (GET /v1/usage) and its budget status (GET
/v1/budgets/status, 3 budgets with forecasts) on a large ledger, first with no ingest (the
reference), then while 1,000-record batches arrive at half the server's ingest capacity,
which is measured first in the same run, and then while 4 clients post batches flat out (full
capacity). Prints figures; asserts nothing.

    .venv/bin/python -m benchmarks.concurrent [--rows 10000000] [--quick]
"""

from __future__ import annotations

import itertools
import multiprocessing
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson

from benchmarks.budgets import prepare
from benchmarks.loadgen import load
from tests.conftest import ADMIN, INGEST, Server, generate_records

SIZES = {"smoke": 50_000, "quick": 1_000_000, "full": 10_000_000}
SECONDS = {"smoke": 1, "quick": 10, "full": 20}
BATCH = 1000


def _paced_ingest(url: str, rate: float, seconds: float, seed: int, done) -> None:
    """Send 1,000-record batches at `rate` records/s for `seconds` (one connection)."""
    now = datetime.now(UTC)
    records = generate_records(int(rate * seconds) + BATCH, seed=seed, prefix=f"live{seed}", start=now - timedelta(hours=1),
                               span=timedelta(minutes=50))
    bodies = [orjson.dumps(records[i:i + BATCH]) for i in range(0, len(records) - BATCH + 1, BATCH)]
    interval = BATCH / rate
    sent = 0
    with httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {INGEST}"}) as client:
        started = time.perf_counter()
        for i, body in enumerate(bodies):
            wait = started + i * interval - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            if time.perf_counter() - started > seconds:
                break
            r = client.post("/v1/usage", content=body, headers={"Content-Type": "application/json"})
            if r.status_code != 200:
                raise RuntimeError(r.text[:200])
            sent += BATCH
    done.put((sent, time.perf_counter() - started))


def while_ingesting(url: str, seconds: float, seed: int, measure):
    """Measure the server's ingest capacity (1,000-record batches from 4 connections, as fast as they
    are answered), then run `measure()` while batches arrive at half of it from another process.
    Returns (measure's result, the ingest rate achieved, the capacity)."""
    now = datetime.now(UTC)
    probe = generate_records(40 * BATCH, seed=3, prefix="cap", start=now - timedelta(hours=2), span=timedelta(hours=1))
    elapsed, _ = load(url, "POST", "/v1/usage", INGEST,
                      [orjson.dumps(probe[i:i + BATCH]) for i in range(0, len(probe), BATCH)], connections=4)
    capacity = len(probe) / elapsed
    done: multiprocessing.Queue = multiprocessing.Queue()
    writer = multiprocessing.Process(target=_paced_ingest, args=(url, capacity / 2, seconds + 1, seed, done))
    writer.start()
    time.sleep(0.5)
    result = measure()
    sent, sent_seconds = done.get(timeout=600)
    writer.join()
    return result, sent / sent_seconds, capacity


def while_flat_out(url: str, seconds: float, seed: int, capacity: float, measure):
    """Run `measure()` while 4 connections post 1,000-record batches as fast as they are answered
    (enough batches for `seconds` at the measured capacity, and more). Returns (result, ingest rate)."""
    import threading

    now = datetime.now(UTC)
    records = generate_records(int(capacity * (seconds + 3)) // BATCH * BATCH + BATCH, seed=seed, prefix=f"flat{seed}",
                               start=now - timedelta(hours=1), span=timedelta(minutes=50))
    bodies = [orjson.dumps(records[i:i + BATCH]) for i in range(0, len(records), BATCH)]
    outcome: dict = {}

    def ingest() -> None:
        outcome["elapsed"], _ = load(url, "POST", "/v1/usage", INGEST, bodies, connections=4)

    thread = threading.Thread(target=ingest)
    thread.start()
    time.sleep(1.0)  # the load generator's processes are up and posting
    result = measure()
    thread.join()
    return result, len(records) / outcome["elapsed"]


def _reads(url: str, seconds: float) -> dict[str, list[float]]:
    """A key's usage (asked by admin, as the dashboard does) and its budget status (asked with the ingest
    token, as the gateway does before a call), one after the other for `seconds`."""
    start = (datetime.now(UTC) - timedelta(days=30)).date().isoformat()
    paths = {"usage": (f"/v1/usage?api_key_id=key-0&start={start}&bucket=day", ADMIN),
             "status": ("/v1/budgets/status?api_key_id=key-0", INGEST)}
    out: dict[str, list[float]] = {name: [] for name in paths}
    with httpx.Client(base_url=url, timeout=60) as client:
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            for name, (path, token) in paths.items():
                t0 = time.perf_counter()
                r = client.get(path, headers={"Authorization": f"Bearer {token}"})
                out[name].append(time.perf_counter() - t0)
                if r.status_code != 200:
                    raise RuntimeError(r.text[:200])
    return out


def percentile(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100)[p - 1] * 1000


def scenarios(size: str = "full", rows: int | None = None) -> list[dict]:
    rows = rows or SIZES[size]
    seconds = SECONDS[size]
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(prepare(Path(tmp) / "bench.duckdb", rows)).start()
        try:
            _reads(server.url, 1)  # warm up
            quiet = _reads(server.url, seconds)
            busy, rate, capacity = while_ingesting(server.url, seconds, 5, lambda: _reads(server.url, seconds))
            full, full_rate = while_flat_out(server.url, seconds, 6, capacity, lambda: _reads(server.url, seconds))
        finally:
            server.stop()
    out = []
    reads_by_load = (("at half capacity", busy, rate), ("flat out (4 clients)", full, full_rate))
    labels = (("usage", "a key's usage, 30 days by day (GET /v1/usage)"),
              ("status", "a key's budget status, 3 budgets with forecasts (GET /v1/budgets/status)"))
    for (load_name, reads, ingest_rate), (name, label) in itertools.product(reads_by_load, labels):
        p99, idle_p99 = percentile(reads[name], 99), percentile(quiet[name], 99)
        out.append({
            "scenario": f"{label}, {rows:,} records, while ingest runs {load_name}",
            "figure": f"p50 {percentile(reads[name], 50):.1f} ms, p99 {p99:.1f} ms ({p99 / idle_p99:.1f}x idle; "
                      f"ingest {ingest_rate:,.0f} records/s, capacity measured alone {capacity:,.0f})",
            "reference": f"the same query with no ingest: p50 {percentile(quiet[name], 50):.1f} ms, "
                         f"p99 {idle_p99:.1f} ms",
            "values": {"rows": rows, "p50_ms": percentile(reads[name], 50), "p99_ms": p99,
                       "reference_p50_ms": percentile(quiet[name], 50), "reference_p99_ms": idle_p99,
                       "ingest_records_per_s": ingest_rate, "capacity_records_per_s": capacity},
        })
    return out


def main() -> None:
    from benchmarks.run import module_main

    module_main(scenarios)


if __name__ == "__main__":
    main()
