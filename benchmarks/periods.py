"""Period close: closing a month of N records (every account's statement and the month's FOCUS rows,
computed and stored in one transaction), beside computing the same documents without storing them,
measured in the same run; and reading a closed statement against computing an open one with its
corrections. Prints figures; asserts nothing.

    .venv/bin/python -m benchmarks.periods [--rows 1000000] [--quick]
"""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from metering.ratecard import load_rate_card
from metering.records import parse_record
from metering.services import ingest, periods, reports
from metering.services.context import Context
from metering.settings import DEFAULT_RATE_CARD, Settings
from metering.store.db import Store
from tests.conftest import generate_records

SIZES = {"smoke": 20_000, "quick": 200_000, "full": 1_000_000}
OCTOBER = datetime(2026, 10, 1, tzinfo=UTC)
NOVEMBER = datetime(2026, 11, 1, tzinfo=UTC)
ACCOUNTS = [f"acct-{i}" for i in range(10)]


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 5, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def fill(ctx: Context, rows: int, *, prefix: str, seed: int) -> None:
    for start in range(0, rows, 50_000):
        batch = generate_records(min(50_000, rows - start), seed=seed + start, start=OCTOBER,
                                 span=NOVEMBER - OCTOBER, keys=100, prefix=f"{prefix}{start}")
        ingest.ingest_records(ctx, [parse_record(r, now=ctx.now()) for r in batch])


def timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def scenarios(size: str = "full", rows: int | None = None) -> list[dict]:
    rows = rows or SIZES[size]
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.duckdb", clock=Clock(), memory_limit=Settings.from_env().memory_limit)
        store.seed_rate_card(load_rate_card(DEFAULT_RATE_CARD), source="bench")
        ctx = Context(store, Settings(db_path=store.path, evaluate_on_ingest=False))
        for i in range(100):
            store.add_key(api_key_id=f"key-{i}", account_id=ACCOUNTS[i % 10], name=None, secret_sha256=f"{i:064x}")
        fill(ctx, rows, prefix="r", seed=1)
        source = reports.LedgerSource(ctx)

        def documents() -> None:
            for account in [*ACCOUNTS, "unassigned"]:
                reports.statement(source, account=account, month="2026-10")
            reports.focus_export(source, start="2026-10-01", end="2026-11-01")

        reference = timed(documents)
        started = time.perf_counter()
        period = periods.close(ctx, month="2026-10")["period"]
        closing = time.perf_counter() - started
        closed_read = timed(lambda: reports.statement(source, account="acct-1", month="2026-10"), repeat=3)
        fill(ctx, max(rows // 10, 1), prefix="late", seed=2)
        open_read = timed(lambda: reports.statement(source, account="acct-1", month="2026-11"), repeat=3)
        store.close()
    return [{
        "scenario": f"period close of a month of {rows:,} records ({period['accounts']} statements, "
                    f"{period['statement_lines']:,} lines, {period['focus_rows']:,} FOCUS rows)",
        "figure": f"{closing * 1000:.0f} ms, one transaction (ingest waits meanwhile)",
        "reference": f"the same statements and FOCUS export computed, not stored: {reference * 1000:.0f} ms",
        "values": {"rows": rows, "ms": closing * 1000, "reference_ms": reference * 1000},
    }, {
        "scenario": f"statement of a closed month (stored) vs. the first open month with corrections "
                    f"({max(rows // 10, 1):,} late records)",
        "figure": f"closed: {closed_read * 1000:.0f} ms",
        "reference": f"open with corrections (scans every earlier month): {open_read * 1000:.0f} ms",
        "values": {"closed_ms": closed_read * 1000, "open_ms": open_read * 1000},
    }]


if __name__ == "__main__":
    from benchmarks.run import module_main

    module_main(scenarios)
