"""Records priced per second: our pricing (in SQL over a batch, as large bodies are priced, and in
Python, as small bodies are) beside `litellm.cost_per_token` in a loop over the same records.
Prints figures; asserts nothing.

    .venv/bin/python -m benchmarks.pricing [--rows 1000000] [--quick]

litellm lives in an environment of its own (`make bench-litellm` makes .venv-litellm), never in
the service's: the benchmark runs it as a subprocess. Without it, the reference is reported as
not measured. litellm prices in binary floats, so its total is also compared with ours, exact.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import orjson

from metering.batch import records_table
from metering.pricing import to_usd, total_pico, unit_prices, units_table
from metering.ratecard import load_rate_card
from metering.records import parse_record
from metering.settings import DEFAULT_RATE_CARD
from metering.store.db import Store
from metering.store.writer import PRICED
from tests.conftest import MODEL, NOW, generate_records

SIZES = {"smoke": 20_000, "quick": 200_000, "full": 1_000_000}
LITELLM_MAX = 50_000  # litellm takes ~0.3 ms a record: this many is enough for a rate
LITELLM_PYTHON = Path(".venv-litellm/bin/python")

_LITELLM = r"""
import json, os, sys, time
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
import litellm
from litellm.types.utils import PromptTokensDetailsWrapper, Usage
price = json.loads(sys.argv[2])
litellm.register_model({price["model"]: {"input_cost_per_token": price["input"], "output_cost_per_token": price["output"],
                        "cache_read_input_token_cost": price["cached"], "litellm_provider": "openai", "mode": "chat"}})
rows = [json.loads(line) for line in open(sys.argv[1])]
usages = [Usage(prompt_tokens=r["input_tokens"], completion_tokens=r["output_tokens"],
                total_tokens=r["input_tokens"] + r["output_tokens"],
                prompt_tokens_details=PromptTokensDetailsWrapper(cached_tokens=r["cached_tokens"])) for r in rows]
total = 0.0
started = time.perf_counter()
for usage in usages:
    prompt, completion = litellm.cost_per_token(model=price["model"], usage_object=usage)
    total += prompt + completion
elapsed = time.perf_counter() - started
print(json.dumps({"seconds": elapsed, "records": len(rows), "total": repr(total)}))
"""


def _records(rows: int) -> list[dict]:
    """Priced records of the rate page's model: no cache writes, thinking billed as output, as
    litellm bills it."""
    out = []
    for r in generate_records(rows, seed=17, prefix="price"):
        out.append({**r, "model": MODEL, "cache_write_tokens": 0, "web_search_requests": 0})
    return out


def litellm_reference(records: list[dict], version) -> dict | None:
    python = Path(os.environ.get("METERING_BENCH_LITELLM_PYTHON", LITELLM_PYTHON))
    if not python.exists():
        return None
    sample = records[:LITELLM_MAX]
    price = {"model": MODEL, "input": float(version.input.current) / 1e6, "output": float(version.output.current) / 1e6,
             "cached": float(version.cached_input.current) / 1e6}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "records.ndjson"
        path.write_bytes(b"\n".join(orjson.dumps(r) for r in sample))
        script = Path(tmp) / "litellm_loop.py"
        script.write_text(_LITELLM)
        done = subprocess.run([str(python), str(script), str(path), json.dumps(price)], capture_output=True, text=True,
                              timeout=1800, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def scenarios(size: str = "full", rows: int | None = None) -> list[dict]:
    rows = rows or SIZES[size]
    records = _records(rows)
    parsed = [parse_record(r, now=NOW) for r in records]
    table = records_table(parsed)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.duckdb")
        store.seed_rate_card(load_rate_card(DEFAULT_RATE_CARD), source="bench")
        version = store.card.version_at(MODEL, NOW)
        sql = f"SELECT count(*), sum(cost_huge) FROM ({PRICED})"

        def run_sql(con):
            con.register("ingest_batch", table)
            con.register("rate_units", units_table(store.card))
            started = time.perf_counter()
            count, total = con.execute(sql, {"received": NOW.replace(tzinfo=None)}).fetchall()[0]
            elapsed = time.perf_counter() - started
            con.unregister("ingest_batch")
            con.unregister("rate_units")
            return count, int(total), elapsed

        count, sql_total, sql_seconds = store.writer.call(run_sql)
        started = time.perf_counter()
        py_total = 0
        for record in parsed:
            v = store.card.version_at(record.model, record.occurred_at)
            py_total += total_pico(record, unit_prices(v, "current"))
        py_seconds = time.perf_counter() - started
        store.close()
    assert count == rows and sql_total == py_total  # both paths agree to the pico-dollar
    exact_sample = sum(total_pico(p, unit_prices(version, "current")) for p in parsed[:LITELLM_MAX])
    ref = litellm_reference(records, version)
    sql_rate, py_rate = rows / sql_seconds, rows / py_seconds
    if ref is None:
        reference = "litellm.cost_per_token: not measured (`make bench-litellm` makes its own environment)"
        values_ref: dict = {}
    else:
        ref_rate = ref["records"] / ref["seconds"]
        drift = Decimal(ref["total"]) - to_usd(exact_sample)
        reference = (f"litellm.cost_per_token in a loop: {ref_rate:,.0f} records/s over {ref['records']:,} records "
                     f"(ours in SQL is {sql_rate / ref_rate:,.0f}x, in Python {py_rate / ref_rate:,.0f}x; its float "
                     f"total is off the exact one by {drift:.2E} USD)")
        values_ref = {"reference_records_per_s": ref_rate, "litellm_total": ref["total"],
                      "exact_total": str(to_usd(exact_sample))}
    return [{
        "scenario": f"pricing, {rows:,} records (current and list price, exact integers)",
        "figure": f"{sql_rate:,.0f} records/s in SQL over a batch; {py_rate:,.0f} records/s in Python one by one",
        "reference": reference,
        "values": {"rows": rows, "sql_records_per_s": sql_rate, "python_records_per_s": py_rate, **values_ref},
    }]


def main() -> None:
    from benchmarks.run import module_main

    module_main(scenarios)


if __name__ == "__main__":
    main()
