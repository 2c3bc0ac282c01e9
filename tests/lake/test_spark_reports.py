"""The Spark engine over the lake gives the documents of the DuckDB store, byte for byte; re-ratings
reach it; duplicates count once; bad lakes get clear messages."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from metering import lake
from metering.cli import main
from metering.lake._spark import SparkLakeSource
from metering.ratecard import Price, RateVersion
from metering.services import ingest as ingesting
from metering.services import reports
from metering.services.context import Context
from metering.services.documents import render
from metering.services.reprice import reprice
from tests.conftest import NOW, generate_records


def ingest(store, records):
    ingesting.ingest_items(Context(store), records)


def ledger(store):
    """The DuckDB side: the store's own ledger as a report source."""
    return reports.LedgerSource(Context(store))


def daily(source, **kw):
    return reports.daily_report(source, now=NOW, **kw)


def documents(source) -> dict[str, bytes]:
    """Four documents (each one Spark query) in every format; tests/lake/test_two_nodes.py covers more
    zones and accounts."""
    out = {}
    doc = daily(source, start="2026-11-01", end="2026-11-26", tz="Asia/Kolkata")
    out["daily.csv"], out["daily.json"] = render(doc, "csv"), render(doc, "json")
    out["daily-tags.csv"] = render(
        daily(source, start="2026-11-01", end="2026-11-26", group_by="tag:project,endpoint,model"), "csv")
    doc = reports.statement(source, account="unassigned", month="2026-11", tz="America/New_York")
    out["statement.csv"], out["statement.json"] = render(doc, "csv"), render(doc, "json")
    doc = reports.focus_export(source, start="2026-11-01", end="2026-11-26")
    out["focus.csv"], out["focus.parquet"] = render(doc, "csv"), render(doc, "parquet")
    return out


@pytest.fixture
def synced(store, tmp_path, spark):
    ingest(store, generate_records(1200, seed=21))
    for i in range(0, 20, 2):
        store.add_key(api_key_id=f"key-{i}", account_id="acct-1" if i % 4 else "acct-2", name=f"Key {i}",
                      secret_sha256=f"{i:064x}")
    lake.sync(store, tmp_path / "lake", "n1")
    return tmp_path / "lake"


def test_spark_documents_equal_the_duckdb_ones_byte_for_byte(store, synced):
    ours, theirs = documents(ledger(store)), documents(SparkLakeSource(synced))
    for name in ours:
        assert theirs[name] == ours[name], name
    assert b"acct-2" in ours["daily.csv"] and b"unassigned" in ours["daily.csv"]


def test_a_rerating_reaches_the_spark_figures_after_a_sync(store, synced):
    before = render(daily(SparkLakeSource(synced), start="2026-11-01", end="2026-11-26"), "csv")
    store.add_rate_version(RateVersion(model="unpriced-model", effective_from=datetime(2026, 1, 1, tzinfo=UTC),
                                       input=Price(Decimal("1"), Decimal("2")),
                                       cached_input=Price(Decimal("0.1"), Decimal("0.2")),
                                       output=Price(Decimal("4"), Decimal("8"))))
    store.add_rate_version(RateVersion(model="minimax-m2-7", effective_from=NOW - timedelta(days=5),
                                       input=Price(Decimal("0.5"), Decimal("0.6")),
                                       cached_input=Price(Decimal("0.05"), Decimal("0.06")),
                                       output=Price(Decimal("2"), Decimal("2.4"))))
    reprice(Context(store), start="2026-11-01", end="2026-11-26", dry_run=False)
    assert lake.sync(store, synced, "n1").restated > 0
    source = SparkLakeSource(synced)
    after = render(daily(source, start="2026-11-01", end="2026-11-26"), "csv")
    assert after == render(daily(ledger(store), start="2026-11-01", end="2026-11-26"), "csv")
    assert after != before
    statement = reports.statement(source, account="unassigned", month="2026-11")  # lines priced by the new versions
    assert render(statement, "json") == render(reports.statement(ledger(store), account="unassigned",
                                                                                  month="2026-11"), "json")


def test_the_same_records_on_two_nodes_count_once(store, synced, tmp_path):
    """A second node holding copies of some records (a retry that reached it) adds nothing."""
    from metering.store.db import Store

    other = Store(tmp_path / "other.duckdb", clock=store.clock)
    other.seed_rate_card(store.card, source="test")
    ingest(other, generate_records(1200, seed=21)[::7])
    lake.sync(other, synced, "n2")
    other.close()
    source = SparkLakeSource(synced)
    for kind in ("daily", "focus"):
        build = daily if kind == "daily" else reports.focus_export
        assert (render(build(source, start="2026-11-01", end="2026-11-26"), "csv")
                == render(build(ledger(store), start="2026-11-01", end="2026-11-26"), "csv"))
    assert source.conflict_count == 0


def test_cli_engine_spark_writes_the_duckdb_bytes(store, synced, tmp_path, capsys):
    out = tmp_path / "spark.csv"
    assert main(["report", "daily", "--start", "2026-11-01", "--end", "2026-11-26", "--tz", "America/New_York",
                 "--engine", "spark", "--lake", str(synced), "-o", str(out)]) == 0
    expected = render(daily(ledger(store), start="2026-11-01", end="2026-11-26", tz="America/New_York"),
                              "csv")
    assert out.read_bytes() == expected
    assert main(["report", "daily", "--engine", "spark"]) == 2
    assert "--lake" in capsys.readouterr().err


def test_a_lake_that_is_not_one_and_a_foreign_segment_get_clear_messages(synced, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", "daily", "--engine", "spark", "--lake", str(empty)]) == 2
    assert "is not a metering lake" in capsys.readouterr().err
    fresh = tmp_path / "fresh"
    lake.open_lake(fresh, create=True)
    assert main(["report", "daily", "--engine", "spark", "--lake", str(fresh)]) == 2
    assert "no usage segments yet" in capsys.readouterr().err

    day = next((synced / "usage").glob("day=*"))
    stray = day / "export.parquet"
    stray.write_bytes(b"hello")
    assert main(["report", "focus", "--start", "2026-11-01", "--end", "2026-11-02", "--engine", "spark",
                 "--lake", str(synced)]) == 2
    err = capsys.readouterr().err
    assert "export.parquet: not a segment of this lake" in err and "Traceback" not in err
    stray.unlink()
    foreign = day / "n9-1-2.parquet"
    pq.write_table(pq.read_table(next(day.glob("n1-*.parquet"))).drop_columns(["cost"]), foreign)
    assert main(["report", "focus", "--start", "2026-11-01", "--end", "2026-11-02", "--engine", "spark",
                 "--lake", str(synced)]) == 2
    assert "missing or mistyped columns cost" in capsys.readouterr().err


def test_without_java_the_spark_engine_says_so(synced, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    env["PATH"] = str(Path(sys.executable).parent)  # python, no java
    done = subprocess.run([sys.executable, "-m", "metering.cli", "report", "daily", "--engine", "spark", "--lake",
                           str(synced)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "needs Java 17" in done.stderr and "Traceback" not in done.stderr
