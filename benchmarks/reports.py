"""The daily cost report over a large ledger, beside one hand-written DuckDB GROUP BY over the
raw ledger measured in the same run. Prints figures; asserts nothing.

    .venv/bin/python -m benchmarks.reports [--rows 10000000] [--quick]

The ledger is generated inside DuckDB (seeded): Zipf-like keys, three models, long-tailed token
counts, cache hits and thinking, 30 days. The rollup is built from it by the writer's own SQL.
"""

from __future__ import annotations

import resource
import statistics
import tempfile
import time
from pathlib import Path

from metering.ratecard import load_rate_card
from metering.services import reports
from metering.services.context import Context
from metering.settings import DEFAULT_RATE_CARD, Settings
from metering.store import rollup
from metering.store.db import Store

# Seeded long-tailed token counts per record number i: input (with cache hits), output (with thinking).
TOKENS = """
    SELECT i,
           floor(exp((hash(i, 5) % 1000) / 1000.0 * 9))::INT AS inp,
           floor(exp((hash(i, 5) % 1000) / 1000.0 * 9) * ((hash(i, 6) % 100) / 100.0))::INT AS cached,
           floor(exp((hash(i, 7) % 1000) / 1000.0 * 7))::INT AS outp,
           floor(exp((hash(i, 7) % 1000) / 1000.0 * 7) * 0.4)::INT AS think
"""

FILL = """
INSERT INTO ledger
SELECT 'req-' || i,
       $base::TIMESTAMP + to_microseconds((i * $step + hash(i, 1) % 60000000)::BIGINT),
       $base::TIMESTAMP,
       'key-' || floor(pow((hash(i, 2) % 1000000) / 1000000.0, 3) * 200)::INT,
       ['minimax-m2-7', 'minimax-m2-7', 'model-b'][1 + (hash(i, 3) % 3)::INT],
       ['chat.completions', 'responses', 'messages'][1 + (hash(i, 4) % 3)::INT],
       inp, cached, 0, outp, think, 0, NULL,
       1, inp::BIGINT * 150000 + outp::BIGINT * 600000, inp::BIGINT * 300000 + outp::BIGINT * 1200000, NULL
FROM ({TOKENS} FROM range($lo, $hi) t(i))
""".replace("{TOKENS}", TOKENS)

# The writer's rollup SQL, over the whole ledger into an empty rollup, stored in time order.
ROLLUP_BUILD = f"INSERT INTO usage_rollup BY NAME {rollup.aggregate('true')} ORDER BY 1"

REFERENCE = """
SELECT occurred_at::DATE AS date, coalesce(k.account_id, 'unassigned') AS account_id, l.api_key_id, l.model,
       count(*), sum(input_tokens), sum(cached_tokens), sum(cache_write_tokens), sum(output_tokens),
       sum(thinking_tokens), sum(web_search_requests), sum(cost_pico), sum(list_cost_pico),
       count(*) FILTER (WHERE rate_version_id IS NULL)
FROM ledger l LEFT JOIN api_keys k USING (api_key_id)
WHERE occurred_at >= TIMESTAMP '2026-10-01' AND occurred_at < TIMESTAMP '2026-10-31'
GROUP BY ALL
"""


def build_ledger(store: Store, rows: int, base: str) -> None:
    """Fill the ledger with `rows` generated records over 30 days from `base`, in the order they
    happened (as a gateway sends them, give or take a minute), then roll it up in time order (as
    the writer's flushes append it)."""
    step = 2_592_000_000_000 // rows  # microseconds between records
    for lo in range(0, rows, 5_000_000):
        store.writer.call(lambda con, lo=lo: con.execute(FILL, {"lo": lo, "hi": min(lo + 5_000_000, rows),
                                                               "base": base, "step": step}))
    store.writer.call(lambda con: con.execute(ROLLUP_BUILD))


def timed(fn, repeat: int = 5) -> float:
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


SIZES = {"smoke": 50_000, "quick": 1_000_000, "full": 10_000_000}


def scenarios(size: str = "full", rows: int | None = None) -> list[dict]:
    rows = rows or SIZES[size]
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.duckdb", memory_limit=Settings.from_env().memory_limit)
        store.seed_rate_card(load_rate_card(DEFAULT_RATE_CARD), source="bench")
        t0 = time.perf_counter()
        build_ledger(store, rows, "2026-10-01")
        build = time.perf_counter() - t0
        store.writer.call(lambda con: con.execute("CHECKPOINT"))
        file_bytes = (Path(tmp) / "bench.duckdb").stat().st_size
        with store.reading() as cur:
            (rollup_rows,) = cur.execute("SELECT count(*) FROM usage_rollup").fetchall()[0]

            def reference() -> None:
                cur.sql(REFERENCE).to_arrow_table()

            ref = timed(reference)
        source = reports.LedgerSource(Context(store))
        now = store.clock()
        ours = timed(lambda: reports.daily_report(source, now=now, start="2026-10-01", end="2026-10-31", tz="UTC"))
        kolkata = timed(lambda: reports.daily_report(source, now=now, start="2026-10-01", end="2026-10-31",
                                                     tz="Asia/Kolkata"))
        store.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # this process: build, rollup and reports
    return [{
        "scenario": f"daily report, 30 days, {rows:,} records",
        "figure": f"{ours * 1000:.0f} ms (Asia/Kolkata days: {kolkata * 1000:.0f} ms)",
        "reference": f"one hand-written DuckDB GROUP BY over the raw ledger: {ref * 1000:.0f} ms "
                     f"({ref / ours:.1f}x our time)",
        "values": {"rows": rows, "rollup_rows": rollup_rows, "build_s": build, "report_ms": ours * 1000,
                   "kolkata_ms": kolkata * 1000, "reference_ms": ref * 1000},
    }, {
        "scenario": f"storage, {rows:,} records (ledger, its primary-key index and the rollup)",
        "figure": f"{file_bytes / rows:.0f} bytes/record ({file_bytes / 2**30:.2f} GiB); peak memory "
                  f"{peak / 2**30:.2f} GiB (generating, rolling up and reporting in one process)",
        "reference": "LiteLLM's spend-log table: ~6,300 bytes/request (published)",
        "values": {"rows": rows, "file_bytes": file_bytes, "bytes_per_record": file_bytes / rows, "peak_rss_bytes": peak},
    }]


def main() -> None:
    from benchmarks.run import module_main

    module_main(scenarios)


if __name__ == "__main__":
    main()
