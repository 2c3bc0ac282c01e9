"""HTTP ingest throughput against the real server (`metering serve` in a subprocess), beside
a do-nothing endpoint (GET /healthz) measured in the same run with the same load generator.
Prints figures; asserts nothing.

    .venv/bin/python -m benchmarks.ingest [--quick] [--rows N (the grown ledger's size)]

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


SIZES = {"smoke": (300, 5), "quick": (10_000, 100), "full": (30_000, 300)}
GROWN = {"smoke": 50_000, "quick": 10_000_000, "full": 100_000_000}  # the ledger the growth scenario starts from


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


def ndjson_reference(records: list[dict]) -> float:
    """Records/s of DuckDB's own bulk load: the same records as one NDJSON file, read by `read_json`
    into a table with the same primary key in one statement (no pricing, no durability per batch)."""
    import duckdb

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "records.ndjson"
        path.write_bytes(b"\n".join(orjson.dumps(r) for r in records))
        con = duckdb.connect(str(Path(tmp) / "ref.duckdb"))
        con.execute("""CREATE TABLE ref (request_id VARCHAR PRIMARY KEY, occurred_at TIMESTAMPTZ, api_key_id VARCHAR,
            model VARCHAR, endpoint VARCHAR, input_tokens BIGINT, cached_tokens BIGINT, cache_write_tokens BIGINT,
            output_tokens BIGINT, thinking_tokens BIGINT, web_search_requests BIGINT, tags JSON)""")
        started = time.perf_counter()
        con.execute(f"INSERT INTO ref BY NAME SELECT * FROM read_json('{path}', format='newline_delimited', "
                    "columns={request_id: 'VARCHAR', occurred_at: 'TIMESTAMPTZ', api_key_id: 'VARCHAR', "
                    "model: 'VARCHAR', endpoint: 'VARCHAR', input_tokens: 'BIGINT', cached_tokens: 'BIGINT', "
                    "cache_write_tokens: 'BIGINT', output_tokens: 'BIGINT', thinking_tokens: 'BIGINT', "
                    "web_search_requests: 'BIGINT', tags: 'JSON'})")
        con.execute("CHECKPOINT")
        elapsed = time.perf_counter() - started
        con.close()
    return len(records) / elapsed


def grown_ledger(size: str, rows: int | None = None, batches: int = 100) -> dict:
    """1,000-record batches from 4 clients into an empty ledger and into one of `rows` records (built
    in SQL and rolled up before the server starts), the same records, in the same run."""
    from datetime import UTC, datetime, timedelta

    from benchmarks.reports import build_ledger
    from metering.store.db import Store

    rows = rows or GROWN[size]
    batches = 5 if size == "smoke" else batches
    warm = 2 if size == "smoke" else 10
    # Records of the last hour, as a gateway sends them (the ledger's rows end now).
    now = datetime.now(UTC)
    records = generate_records((warm + batches) * 1000, seed=42, prefix="grow", start=now - timedelta(hours=1),
                               span=timedelta(minutes=50))
    bodies = [orjson.dumps(records[i * 1000:(i + 1) * 1000]) for i in range(warm + batches)]
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, fill in (("empty", 0), ("grown", rows)):
            db = Path(tmp) / f"{name}.duckdb"
            if fill:
                with Store(db) as store:
                    build_ledger(store, fill, (datetime.now(UTC) - timedelta(days=30)).replace(tzinfo=None).isoformat())
            server = Server(db).start()
            try:
                run(server.url, "POST", "/v1/usage", bodies[:warm], 4)  # warm up (the indexes' first pages)
                elapsed, _ = run(server.url, "POST", "/v1/usage", bodies[warm:], 4)
            finally:
                server.stop()
            rates[name] = batches * 1000 / elapsed
            db.unlink()
    return {"scenario": f"HTTP ingest, 1,000-record batches, 4 clients, into a ledger of {rows:,} records",
            "figure": f"{rates['grown']:,.0f} records/s ({rates['grown'] / rates['empty']:.2f}x the empty ledger's)",
            "reference": f"the same batches into an empty ledger: {rates['empty']:,.0f} records/s",
            "values": {"rows": rows, "records_per_s": rates["grown"], "reference_records_per_s": rates["empty"]}}


def scenarios(size: str = "full", rows: int | None = None) -> list[dict]:
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
    bulk = ndjson_reference(records[singles:])
    batch_rate = batches * 1000 / batch_time
    return [
        {"scenario": "HTTP ingest, single-record POSTs, 64 concurrent clients",
         "figure": f"{singles / one_time:,.0f} req/s, p50 {pct(one_lat, 50):.1f} ms, p99 {pct(one_lat, 99):.1f} ms",
         "reference": f"GET /healthz (does nothing): {singles / ref_time:,.0f} req/s, p99 {pct(ref_lat, 99):.1f} ms",
         "values": {"requests_per_s": singles / one_time, "p50_ms": pct(one_lat, 50), "p99_ms": pct(one_lat, 99),
                    "reference_requests_per_s": singles / ref_time}},
        {"scenario": "HTTP ingest, 1,000-record batches, 4 concurrent clients",
         "figure": f"{batch_rate:,.0f} records/s ({batch_rate / reference:.2f}x the first reference, "
                   f"{batch_rate / bulk:.2f}x the second)",
         "reference": f"Arrow straight into DuckDB with the same primary key, a commit per 1,000: {reference:,.0f} "
                      f"records/s; DuckDB's bulk NDJSON load of the same records (one statement): {bulk:,.0f} records/s",
         "values": {"records_per_s": batch_rate, "reference_records_per_s": reference,
                    "ndjson_bulk_records_per_s": bulk}},
        grown_ledger(size, rows),
    ]


def main() -> None:
    from benchmarks.run import module_main

    module_main(scenarios)


if __name__ == "__main__":
    main()
