"""Provider reconciliation over a large ledger: a month of OpenAI usage pages (per day x model, and
per day x model x API key) against the ledger, beside one hand-written DuckDB GROUP BY of the ledger
per day x model x key measured in the same run. Prints figures; asserts nothing.

    .venv/bin/python -m benchmarks.reconcile [--rows 10000000] [--quick]

The ledger is the daily-report benchmark's (seeded, 30 days, 200 keys, three models); the provider
report is written from the ledger's own sums in the pages the Usage API returns (7 daily buckets a
page), so every row matches and the whole comparison runs.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import orjson

from benchmarks.reports import build_ledger, timed
from metering.ratecard import load_rate_card
from metering.services.context import Context
from metering.services.reconcile import reconcile
from metering.settings import DEFAULT_RATE_CARD, Settings
from metering.store.db import Store

SIZES = {"smoke": 50_000, "quick": 1_000_000, "full": 10_000_000}
START, END = "2026-10-01", "2026-10-31"
PER_KEY = """
SELECT epoch(date_trunc('day', occurred_at))::BIGINT AS day, model, api_key_id, count(*) AS n,
       sum(input_tokens) AS input, sum(cached_tokens) AS cached, sum(cache_write_tokens) AS writes,
       sum(output_tokens) AS output
FROM ledger WHERE occurred_at >= TIMESTAMP '2026-10-01' AND occurred_at < TIMESTAMP '2026-10-31'
GROUP BY ALL ORDER BY ALL
"""


def openai_pages(rows: list[tuple], *, by_key: bool) -> list[dict]:
    """The ledger's sums as Usage API pages of 7 daily buckets (bucket_width=1d)."""
    buckets: dict[int, list[dict]] = {}
    merged: dict[tuple, list[int]] = {}
    for day, model, key, n, inp, cached, writes, out in rows:
        sums = merged.setdefault((day, model, key if by_key else None), [0, 0, 0, 0, 0])
        for i, v in enumerate((n, inp, cached, writes, out)):
            sums[i] += int(v)
    for (day, model, key), (n, inp, cached, writes, out) in merged.items():
        buckets.setdefault(day, []).append({
            "object": "organization.usage.completions.result", "input_tokens": inp, "output_tokens": out,
            "input_cached_tokens": cached, "input_cache_write_tokens": writes, "num_model_requests": n,
            "project_id": None, "user_id": None, "api_key_id": key, "model": model, "batch": None})
    days = sorted(buckets)
    pages = []
    for i in range(0, len(days), 7):
        chunk = days[i:i + 7]
        pages.append({"object": "page", "has_more": i + 7 < len(days), "next_page": None, "data": [
            {"object": "bucket", "start_time": d, "end_time": d + 86_400, "results": buckets[d]} for d in chunk]})
    return pages


def scenarios(size: str = "full", rows: int | None = None) -> list[dict]:
    rows = rows or SIZES[size]
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.duckdb", memory_limit=Settings.from_env().memory_limit)
        store.seed_rate_card(load_rate_card(DEFAULT_RATE_CARD), source="bench")
        build_ledger(store, rows, START)
        with store.reading() as cur:
            sums = cur.execute(PER_KEY).fetchall()
            ref = timed(lambda: cur.execute(PER_KEY).fetchall())
        by_model = openai_pages(sums, by_key=False)
        by_key = openai_pages(sums, by_key=True)
        body_bytes = len(orjson.dumps(by_key))
        results_per_key = sum(len(b["results"]) for p in by_key for b in p["data"])
        parse = {}

        def run(pages: list[dict], **split) -> dict:
            # the body as the API receives it: bytes, decoded per call
            return reconcile(Context(store), provider="openai", report=orjson.loads(parse.setdefault(id(pages), orjson.dumps(
                pages))), start=START, end=END, **split)

        first = run(by_model)
        ours_model = timed(lambda: run(by_model))
        split = {"split_by": "api_key_id", "match_to": "api_key_id"}
        keyed = run(by_key, **split)
        ours_key = timed(lambda: run(by_key, **split), repeat=3)
        store.close()
    assert first["summary"]["drift"] == 0 and keyed["summary"]["drift"] == 0, "the benchmark's report must match"
    return [{
        "scenario": f"provider reconciliation, 30 days, {rows:,} records, per day x model ({first['summary']['rows']} rows)",
        "figure": f"{ours_model * 1000:.0f} ms (parse, ledger query on the rollup, compare, price)",
        "reference": f"one hand-written DuckDB GROUP BY day x model x key over the raw ledger: {ref * 1000:.0f} ms",
        "values": {"rows": rows, "ms": ours_model * 1000, "reference_ms": ref * 1000},
    }, {
        "scenario": f"provider reconciliation per day x model x API key ({results_per_key:,} report results, "
                    f"{body_bytes / 2**20:.1f} MiB of pages)",
        "figure": f"{ours_key * 1000:.0f} ms",
        "reference": f"the same hand-written GROUP BY: {ref * 1000:.0f} ms ({ours_key / ref:.1f}x its time)",
        "values": {"rows": rows, "results": results_per_key, "body_bytes": body_bytes, "ms": ours_key * 1000,
                   "reference_ms": ref * 1000},
    }]


def main() -> None:
    from benchmarks.run import module_main

    module_main(scenarios)


if __name__ == "__main__":
    main()
