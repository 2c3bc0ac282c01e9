"""The lake: export throughput, bytes per record, and the Spark daily report over it, each beside a
reference measured in the same run. Prints figures; asserts nothing.

    .venv/bin/python -m benchmarks.lake [--rows 10000000] [--quick]

- Sync: `metering.lake.sync` of a node's whole ledger (records/s), beside DuckDB's own
  `COPY (SELECT the same columns) TO '...parquet' (FORMAT parquet, COMPRESSION zstd)` of the same rows.
- Storage: lake bytes per record for two request_id shapes: `req-<n>` (sequential, the shape every
  other benchmark here uses) and a random 128-bit UUID (`xxxxxxxx-xxxx-...`, as gateways that mint
  UUIDs send; as incompressible as request ids get), beside the DuckDB file of the same records.
- Reports: the 30-day daily report (UTC days, by account, key and model) computed by Spark
  (`--engine spark`, local[*]) over the lake, beside DuckDB reading the same lake files with one
  GROUP BY of the same result.

The ledger is generated inside DuckDB (seeded) as benchmarks/reports.py does: Zipf-like keys over
200 keys in 20 accounts, three models, long-tailed token counts, cache hits and thinking, a project
tag, 30 days in time order, received a second or so after it occurred, with commit sequence numbers.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import duckdb

from benchmarks.reports import TOKENS
from metering import lake
from metering.ratecard import load_rate_card
from metering.services import reports
from metering.settings import DEFAULT_RATE_CARD, Settings
from metering.store.db import Store

IDS = {"sequential": "'req-' || i",
       "uuid": "regexp_replace(md5(i::VARCHAR || 'x'), '^(.{8})(.{4})(.{4})(.{4})(.{12})$', '\\1-\\2-\\3-\\4-\\5')"}

FILL = """
INSERT INTO ledger (request_id, occurred_at, received_at, api_key_id, model, endpoint, input_tokens, cached_tokens,
                    cache_write_tokens, output_tokens, thinking_tokens, web_search_requests, tags, rate_version_id,
                    cost_pico, list_cost_pico, seq)
SELECT {rid},
       $base::TIMESTAMP + to_microseconds((i * $step + hash(i, 1) % 60000000)::BIGINT),
       $base::TIMESTAMP + to_microseconds((i * $step + 60000000 + hash(i, 9) % 2000000)::BIGINT),
       'key-' || floor(pow((hash(i, 2) % 1000000) / 1000000.0, 3) * 200)::INT,
       ['minimax-m2-7', 'minimax-m2-7', 'model-b'][1 + (hash(i, 3) % 3)::INT],
       ['chat.completions', 'responses', 'messages'][1 + (hash(i, 4) % 3)::INT],
       inp, cached, 0, outp, CASE WHEN hash(i, 10) % 10 < 7 THEN think END, 0,
       MAP {{'project': ['alpha', 'beta', 'gamma'][1 + (hash(i, 8) % 3)::INT]}},
       1, inp::BIGINT * 150000 + outp::BIGINT * 600000, inp::BIGINT * 300000 + outp::BIGINT * 1200000, i + 1
FROM ({TOKENS} FROM range($lo, $hi) t(i))
"""
KEYS = """
INSERT INTO api_keys SELECT 'key-' || i, 'acct-' || (i % 20), 'Key ' || i, md5(i::VARCHAR) || md5(i::VARCHAR),
                            TIMESTAMP '2026-09-01' FROM range(200) t(i)
"""
COPY = """
COPY (SELECT request_id, timezone('UTC', occurred_at) AS occurred_at, api_key_id, model, endpoint, input_tokens,
             cached_tokens, cache_write_tokens, output_tokens, thinking_tokens, web_search_requests, tags,
             timezone('UTC', received_at) AS received_at, 'bench' AS node_id, rate_version_id,
             cost_pico::DECIMAL(38, 0) * 0.000000000001 AS cost, list_cost_pico::DECIMAL(38, 0) * 0.000000000001
             AS list_cost, seq
      FROM ledger ORDER BY occurred_at, api_key_id) TO '{path}' (FORMAT parquet, COMPRESSION zstd)
"""
# DuckDB over the lake's files: the daily report's sums (UTC days x account x key x model), one GROUP BY.
OVER_LAKE = """
SELECT s.day, coalesce(k.account_id, 'unassigned') AS account_id, s.api_key_id, s.model, count(*),
       sum(input_tokens), sum(cached_tokens), sum(cache_write_tokens), sum(output_tokens),
       coalesce(sum(thinking_tokens), 0), sum(web_search_requests), coalesce(sum(cost), 0), coalesce(sum(list_cost), 0),
       count(*) FILTER (WHERE rate_version_id IS NULL)
FROM read_parquet('{lake}/usage/*/*.parquet', hive_partitioning = true) s
LEFT JOIN read_parquet('{lake}/keys/*.parquet') k USING (api_key_id)
WHERE s.day >= DATE '2026-10-01' AND s.day < DATE '2026-10-31'
GROUP BY ALL ORDER BY ALL
"""
SIZES = {"smoke": 20_000, "quick": 1_000_000, "full": 10_000_000}


def build(path: Path, rows: int, shape: str) -> Store:
    store = Store(path, memory_limit=Settings.from_env().memory_limit)
    store.seed_rate_card(load_rate_card(DEFAULT_RATE_CARD), source="bench")
    step = 2_592_000_000_000 // rows
    fill = FILL.format(rid=IDS[shape], TOKENS=TOKENS)
    for lo in range(0, rows, 2_000_000):
        store.writer.call(lambda con, lo=lo: con.execute(fill, {"lo": lo, "hi": min(lo + 2_000_000, rows),
                                                               "base": "2026-10-01", "step": step}))
    store.writer.call(lambda con: con.execute(KEYS))
    store.writer.call(lambda con: con.execute("CHECKPOINT"))
    return store


def lake_bytes(lake_dir: Path) -> int:
    return sum(p.stat().st_size for p in (lake_dir / "usage").rglob("*.parquet"))


def scenarios(size: str = "full", rows: int | None = None) -> list[dict]:
    rows = rows or SIZES[size]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        figures = {}
        for shape in ("sequential", "uuid"):
            store = build(root / f"{shape}.duckdb", rows, shape)
            db_bytes = (root / f"{shape}.duckdb").stat().st_size
            t0 = time.perf_counter()
            result = lake.sync(store, root / f"lake-{shape}", "bench")
            sync_s = time.perf_counter() - t0
            with store.reading() as cur:
                t0 = time.perf_counter()
                cur.execute(COPY.format(path=root / f"copy-{shape}.parquet"))
                copy_s = time.perf_counter() - t0
            store.close()
            figures[shape] = {"sync_s": sync_s, "copy_s": copy_s, "segments": len(result.segments),
                              "lake_bytes": lake_bytes(root / f"lake-{shape}"), "db_bytes": db_bytes,
                              "copy_bytes": (root / f"copy-{shape}.parquet").stat().st_size}
        seq, uuid = figures["sequential"], figures["uuid"]
        results.append({
            "scenario": f"lake sync, {rows:,} records (one node's whole ledger)",
            "figure": f"{rows / seq['sync_s']:,.0f} records/s ({seq['segments']} segments, per UTC day and "
                      f"{lake.CHUNK_SEQ:,} seq; fsync each)",
            "reference": f"DuckDB COPY ... TO parquet (zstd, one file) of the same rows: {rows / seq['copy_s']:,.0f} "
                         "records/s",
            "values": {"rows": rows, **{f"sequential_{k}": v for k, v in seq.items()},
                       **{f"uuid_{k}": v for k, v in uuid.items()}},
        })
        results.append({
            "scenario": f"lake storage, {rows:,} records",
            "figure": f"{seq['lake_bytes'] / rows:.1f} bytes/record with request_ids req-<n>; "
                      f"{uuid['lake_bytes'] / rows:.1f} with random UUIDs",
            "reference": f"the DuckDB file of the same records: {seq['db_bytes'] / rows:.0f} bytes/record "
                         f"({uuid['db_bytes'] / rows:.0f} with UUIDs); DuckDB's own zstd Parquet of the same "
                         f"rows: {seq['copy_bytes'] / rows:.1f} ({uuid['copy_bytes'] / rows:.1f})",
            "values": {"rows": rows, "lake_bytes_sequential": seq["lake_bytes"], "lake_bytes_uuid": uuid["lake_bytes"],
                       "db_bytes_sequential": seq["db_bytes"], "db_bytes_uuid": uuid["db_bytes"]},
        })

        lake_dir = root / "lake-sequential"
        t0 = time.perf_counter()
        from metering.lake._spark import SparkLakeSource

        source = SparkLakeSource(lake_dir, conf={"spark.driver.memory": "4g"})  # local[*]: the driver runs the tasks
        start_s = time.perf_counter() - t0
        timings = []
        for _ in range(1 if size == "smoke" else 2):
            t0 = time.perf_counter()
            doc = reports.daily_report(source, now=source.clock(), start="2026-10-01", end="2026-10-31", tz="UTC")
            timings.append(time.perf_counter() - t0)
        # A second node holding copies of 1 record in 10,000 (gateway retries that reached it): the reader
        # must now de-duplicate request_ids across nodes (a shuffle of every record's id hash).
        other = Store(root / "other.duckdb")
        other.writer.call(lambda con: con.execute(
            f"ATTACH '{root / 'sequential.duckdb'}' AS src (READ_ONLY); "
            "INSERT INTO ledger SELECT * FROM src.ledger WHERE seq % 10000 = 0; DETACH src"))
        lake.sync(other, lake_dir, "bench-2")
        other.close()
        source = SparkLakeSource(lake_dir)
        t0 = time.perf_counter()
        dedup_doc = reports.daily_report(source, now=source.clock(), start="2026-10-01", end="2026-10-31", tz="UTC")
        dedup_s = time.perf_counter() - t0
        assert dedup_doc.frame.equals(doc.frame), "the copies on the second node were counted"
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        ref = []
        for _ in range(2):
            t0 = time.perf_counter()
            ref_rows = con.sql(OVER_LAKE.format(lake=lake_dir)).fetchall()
            ref.append(time.perf_counter() - t0)
        con.close()
        results.append({
            "scenario": f"daily report over the lake with Spark (local[*]), 30 days, {rows:,} records",
            "figure": f"{min(timings):.1f} s warm ({timings[0]:.1f} s first; Spark start {start_s:.1f} s); "
                      f"{doc.frame.height - 1:,} rows; with a second node holding copies of 0.01% of the "
                      f"records (ids de-duplicated across nodes): {dedup_s:.1f} s",
            "reference": f"DuckDB reading the same lake files, one GROUP BY of the same sums (no de-duplication): "
                         f"{min(ref):.2f} s ({len(ref_rows):,} rows)",
            "values": {"rows": rows, "spark_s": min(timings), "spark_first_s": timings[0], "spark_start_s": start_s,
                       "spark_two_nodes_s": dedup_s,
                       "duckdb_s": min(ref), "report_rows": doc.frame.height - 1, "duckdb_rows": len(ref_rows)},
        })
    return results


def main() -> None:
    from benchmarks.run import module_main

    module_main(scenarios)


if __name__ == "__main__":
    main()
