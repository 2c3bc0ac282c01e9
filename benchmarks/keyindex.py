"""What the uniqueness of `request_id` costs on disk, and what a 16-byte digest key would: the same ids
stored (a) as a VARCHAR primary key, (b) as a VARCHAR column beside a UHUGEINT primary key holding
md5_number(request_id), (c) as a VARCHAR column with no key; sequential ids (`req-<n>`) and random
gateway-style ids (`chatcmpl-<24 hex>`), inserted in commits of up to 1M rows, file bytes a record after a
checkpoint. Prints figures; asserts nothing.

    .venv/bin/python -m benchmarks.keyindex [--rows 5000000] [--quick]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import duckdb

SIZES = {"smoke": 50_000, "quick": 1_000_000, "full": 5_000_000}
IDS = {"req-<n>": "'req-' || range", "chatcmpl-<24 hex>": "'chatcmpl-' || md5(range::VARCHAR)[:24]"}
FORMS = {
    "VARCHAR primary key": ("CREATE TABLE t (request_id VARCHAR PRIMARY KEY)", "SELECT {ids} FROM range({lo}, {hi})"),
    "md5_number(request_id) UHUGEINT primary key + VARCHAR": (
        "CREATE TABLE t (k UHUGEINT PRIMARY KEY, request_id VARCHAR)",
        "SELECT md5_number(id), id FROM (SELECT {ids} AS id FROM range({lo}, {hi}))"),
    "VARCHAR, no key": ("CREATE TABLE t (request_id VARCHAR)", "SELECT {ids} FROM range({lo}, {hi})"),
}


def measure(rows: int, ids: str, ddl: str, select: str) -> tuple[float, float]:
    """(file bytes a record, rows a second)"""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "keys.duckdb"
        con = duckdb.connect(str(path))
        con.execute(ddl)
        started = time.perf_counter()
        for lo in range(0, rows, 1_000_000):
            con.execute("INSERT INTO t " + select.format(ids=ids, lo=lo, hi=min(lo + 1_000_000, rows)))
        con.execute("CHECKPOINT")
        seconds = time.perf_counter() - started
        con.close()
        return path.stat().st_size / rows, rows / seconds


def scenarios(size: str = "full", rows: int | None = None) -> list[dict]:
    rows = rows or SIZES[size]
    out = []
    for id_name, ids in IDS.items():
        figures = {form: measure(rows, ids, ddl, select) for form, (ddl, select) in FORMS.items()}
        keyed, digest, bare = (figures[f] for f in FORMS)
        out.append({
            "scenario": f"the request_id key on disk, {rows:,} ids like {id_name}",
            "figure": f"VARCHAR primary key {keyed[0]:.1f} bytes a record; a 16-byte digest key beside the column "
                      f"{digest[0]:.1f}",
            "reference": f"the column with no key: {bare[0]:.1f} bytes a record",
            "values": {"rows": rows, "ids": id_name, **{form: {"bytes_per_record": b, "rows_per_s": r}
                                                       for form, (b, r) in figures.items()}},
        })
    return out


def main() -> None:
    from benchmarks.run import module_main

    module_main(scenarios)


if __name__ == "__main__":
    main()
