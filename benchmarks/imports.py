"""Bulk import of a Parquet file into the database file (`metering import FILE.parquet --db ...`),
beside DuckDB itself inserting the same file into a table with the same primary key, measured in
the same run. Prints figures; asserts nothing.

    .venv/bin/python -m benchmarks.imports [--rows 10000000] [--quick]

The file is typed as a producer would write it: zoned timestamps, integer counts, a map of tags.
It is generated inside DuckDB (seeded, the same shape as benchmarks/reports.py's ledger).
"""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from benchmarks.reports import TOKENS
from metering.ratecard import load_rate_card
from metering.settings import DEFAULT_RATE_CARD
from metering.store.db import Store, migrate

RECORDS = """
COPY (
    SELECT 'imp-' || i AS request_id,
           (TIMESTAMP '2026-10-01' + to_microseconds((hash(i, 1) % 2592000000000)::BIGINT))::TIMESTAMPTZ AS occurred_at,
           'key-' || floor(pow((hash(i, 2) % 1000000) / 1000000.0, 3) * 200)::INT AS api_key_id,
           ['minimax-m2-7', 'minimax-m2-7', 'model-b'][1 + (hash(i, 3) % 3)::INT] AS model,
           ['chat.completions', 'responses', 'messages'][1 + (hash(i, 4) % 3)::INT] AS endpoint,
           inp::BIGINT AS input_tokens, cached::BIGINT AS cached_tokens, 0::BIGINT AS cache_write_tokens,
           outp::BIGINT AS output_tokens, think::BIGINT AS thinking_tokens, 0::BIGINT AS web_search_requests,
           MAP {'project': ['alpha', 'beta', 'gamma'][1 + (hash(i, 8) % 3)::INT]} AS tags
    FROM ({TOKENS} FROM range($rows) t(i))
) TO '{path}' (FORMAT parquet)
""".replace("{TOKENS}", TOKENS)

REFERENCE = """
INSERT INTO ledger BY NAME
SELECT * EXCLUDE (occurred_at), timezone('UTC', occurred_at) AS occurred_at, now()::TIMESTAMP AS received_at
FROM read_parquet('{path}')
"""

SIZES = {"smoke": 30_000, "quick": 1_000_000, "full": 10_000_000}


def generate(path: Path, rows: int) -> None:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(RECORDS.replace("{path}", str(path)), {"rows": rows})
    con.close()


def ours(path: Path, db: Path) -> dict:
    """What `metering import` does with the database file: the CLI's own reader and backend."""
    from metering.backends import LocalBackend
    from metering.cli import _read_items, _tabular_row
    from metering.services.context import Context

    store = Store(db)
    store.seed_rate_card(load_rate_card(DEFAULT_RATE_CARD), source="bench")
    backend = LocalBackend(Context(store))
    totals = {"accepted": 0, "duplicates": 0, "rejected": 0}
    started = time.perf_counter()
    for table in _read_items(path, 10_000, tables=True):
        result = backend.ingest_table(table, _tabular_row)
        for name in totals:
            totals[name] += result[name]
    elapsed = time.perf_counter() - started
    store.close()
    return {"seconds": elapsed, **totals}


def reference(path: Path, db: Path) -> float:
    con = duckdb.connect(str(db))
    migrate(con, now=datetime.now(UTC))
    started = time.perf_counter()
    con.execute(REFERENCE.replace("{path}", str(path)))
    elapsed = time.perf_counter() - started
    con.close()
    return elapsed


def scenarios(size: str = "full", rows: int | None = None) -> list[dict]:
    rows = rows or SIZES[size]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "usage.parquet"
        generate(path, rows)
        ref = reference(path, Path(tmp) / "ref.duckdb")
        result = ours(path, Path(tmp) / "ours.duckdb")
    rate, ref_rate = rows / result["seconds"], rows / ref
    return [{
        "scenario": f"bulk import of a Parquet file, {rows:,} records (`metering import --db`)",
        "figure": f"{rate:,.0f} records/s, validated, priced and rolled up ({result['accepted']:,} accepted)",
        "reference": f"DuckDB inserting the file into a table with the same primary key: {ref_rate:,.0f} records/s "
                     f"(ours is {100 * rate / ref_rate:.0f}% of it)",
        "values": {"rows": rows, "records_per_s": rate, "reference_records_per_s": ref_rate, **result},
    }]


def main() -> None:
    from benchmarks.run import module_main

    module_main(scenarios)


if __name__ == "__main__":
    main()
