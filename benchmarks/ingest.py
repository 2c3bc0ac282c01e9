"""HTTP ingest throughput against the real server (`metering serve` in a subprocess), beside
a do-nothing endpoint (GET /healthz) measured in the same run with the same load generator.
Prints figures; asserts nothing.

    .venv/bin/python -m benchmarks.ingest [--quick]

The load generator (benchmarks/loadgen.py) is 2 processes of asyncio keep-alive connections
with prebuilt requests, a few microseconds of client work per request.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import orjson

from benchmarks.loadgen import load
from tests.conftest import INGEST, Server, generate_records


def run(url: str, method: str, path: str, bodies: list[bytes], clients: int) -> tuple[float, list[float]]:
    """Load from `clients` keep-alive connections over 2 processes (benchmarks/loadgen.py)."""
    return load(url, method, path, INGEST, bodies, connections=clients, processes=2)


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] * 1000


SIZES = {"smoke": (300, 5), "quick": (3_000, 20), "full": (30_000, 300)}


def arrow_reference(records: list[dict], batch: int = 1000) -> float:
    """Records/s inserting the same records from Arrow straight into DuckDB, 1,000 at a time, into a
    table with the same primary key (the same uniqueness guarantee), each batch its own commit."""
    import duckdb
    import pyarrow as pa

    from metering.batch import records_table
    from metering.records import parse_record
    from tests.conftest import NOW

    parsed = [parse_record(r, now=NOW) for r in records]
    tables = []
    for i in range(0, len(parsed), batch):
        table = records_table(parsed[i:i + batch])
        table = table.append_column("received_at", pa.array([0] * len(table), pa.int64()).cast(pa.timestamp("us")))
        tables.append(table.append_column("seq", pa.array(range(i, i + len(table)), pa.int64())))
    with tempfile.TemporaryDirectory() as tmp:
        con = duckdb.connect(str(Path(tmp) / "ref.duckdb"))
        from metering.store.db import migrate

        migrate(con, now=NOW)
        started = time.perf_counter()
        for table in tables:
            con.register("t", table)
            con.execute("INSERT OR IGNORE INTO ledger BY NAME SELECT * FROM t")
            con.unregister("t")
        elapsed = time.perf_counter() - started
        con.close()
    return len(records) / elapsed


def scenarios(size: str = "full") -> list[dict]:
    singles, batches = SIZES[size]
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp) / "bench.duckdb").start()
        try:
            records = generate_records(singles + batches * 1000, seed=99, prefix="bench")
            single_bodies = [orjson.dumps(r) for r in records[:singles]]
            batch_bodies = [orjson.dumps(records[singles + i * 1000: singles + (i + 1) * 1000]) for i in range(batches)]
            ref_time, ref_lat = run(server.url, "GET", "/healthz", [b""] * singles, 64)
            one_time, one_lat = run(server.url, "POST", "/v1/usage", single_bodies, 64)
            batch_time, _ = run(server.url, "POST", "/v1/usage", batch_bodies, 4)
        finally:
            server.stop()
    reference = arrow_reference(records[singles:])
    batch_rate = batches * 1000 / batch_time
    return [
        {"scenario": "HTTP ingest, single-record POSTs, 64 concurrent clients",
         "figure": f"{singles / one_time:,.0f} req/s, p50 {pct(one_lat, 50):.1f} ms, p99 {pct(one_lat, 99):.1f} ms",
         "reference": f"GET /healthz (does nothing): {singles / ref_time:,.0f} req/s, p99 {pct(ref_lat, 99):.1f} ms",
         "values": {"requests_per_s": singles / one_time, "p50_ms": pct(one_lat, 50), "p99_ms": pct(one_lat, 99),
                    "reference_requests_per_s": singles / ref_time}},
        {"scenario": "HTTP ingest, 1,000-record batches, 4 concurrent clients",
         "figure": f"{batch_rate:,.0f} records/s ({100 * batch_rate / reference:.0f}% of the reference)",
         "reference": f"Arrow straight into DuckDB with the same primary key: {reference:,.0f} records/s",
         "values": {"records_per_s": batch_rate, "reference_records_per_s": reference}},
    ]


def main() -> None:
    from benchmarks.run import module_main

    module_main(scenarios)


if __name__ == "__main__":
    main()
