"""The lake export: layout and names, exactly once across re-syncs and kills, re-ratings, bad input."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from metering import lake
from metering.lake._sync import _chunks
from metering.ratecard import Price, RateVersion
from metering.services import ingest as ingesting
from metering.services.context import Context
from metering.services.reprice import reprice
from metering.store.db import Store
from tests.conftest import NOW, generate_records

SEGMENT_NAME = r"^n1-(\d+)-(\d+)(-r\d+)?\.parquet$"


def ingest(store: Store, records: list[dict]) -> None:
    ingesting.ingest_items(Context(store), records)


def segments(lake_dir: Path) -> list[Path]:
    return sorted((lake_dir / "usage").glob("day=*/*.parquet"))


def lake_rows(lake_dir: Path, *, originals_only: bool = True) -> pa.Table:
    tables = [pq.read_table(p) for p in segments(lake_dir)]
    table = pa.concat_tables(tables) if tables else pa.table({"request_id": pa.array([], pa.string())})
    if originals_only and "restatement" in table.column_names:
        table = table.filter(table.column("restatement").is_null())
    return table


def test_segments_are_per_utc_day_named_by_node_and_seq_range_sorted_and_typed(store, tmp_path):
    records = generate_records(600, span=timedelta(days=3))
    ingest(store, records)
    store.add_key(api_key_id="key-1", account_id="acct-1", name="one", secret_sha256="ab" * 32)
    result = lake.sync(store, tmp_path / "lake", "n1")
    assert result.records == 600 and result.exported_seq == 600

    files = segments(tmp_path / "lake")
    assert {p.parent.name for p in files} == {f"day={d}" for d in sorted({r["occurred_at"][:10] for r in records})}
    seen = []
    for path in files:
        table = pq.read_table(path)
        assert table.schema.names == list(lake.SEGMENT_COLUMNS)
        assert table.schema.field("cost").type == pa.decimal128(38, 12)
        assert str(table.schema.field("occurred_at").type) == "timestamp[us, tz=UTC]"
        assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == "ZSTD"
        seqs = table.column("seq").to_pylist()
        assert path.name == f"n1-{min(seqs)}-{max(seqs)}.parquet"
        days = {t.date().isoformat() for t in table.column("occurred_at").to_pylist()}
        assert days == {path.parent.name[4:]}
        times = table.column("occurred_at").to_pylist()
        assert times == sorted(times)
        assert set(table.column("node_id").to_pylist()) == {"n1"}
        seen += table.column("request_id").to_pylist()
    assert sorted(seen) == sorted(r["request_id"] for r in records)

    with store.reading() as cur:
        stored = dict(cur.execute("SELECT request_id, cost_pico FROM ledger").fetchall())
    rows = lake_rows(tmp_path / "lake").to_pylist()
    for row in rows:
        pico = stored[row["request_id"]]
        assert (row["cost"] is None) == (pico is None)
        if pico is not None:
            assert row["cost"].scaleb(12) == pico
    assert any(row["cost"] is None for row in rows)  # the unpriced model stays null

    keys = pq.read_table(tmp_path / "lake" / "keys" / "n1.parquet")
    assert keys.column_names == ["api_key_id", "account_id", "name", "created_at", "node_id"]  # no secret digest
    assert pq.read_table(tmp_path / "lake" / "rate_card" / "n1.parquet").num_rows >= 1
    state = json.loads((tmp_path / "lake" / "_state" / "n1.json").read_text())
    assert state["exported_seq"] == 600 and state["plan_end"] is None


def test_a_second_sync_exports_only_what_is_new(store, tmp_path):
    ingest(store, generate_records(300, seed=1))
    lake.sync(store, tmp_path / "lake", "n1")
    before = {p: p.stat().st_mtime_ns for p in segments(tmp_path / "lake")}
    again = lake.sync(store, tmp_path / "lake", "n1")
    assert again.records == 0 and again.segments == []
    assert {p: p.stat().st_mtime_ns for p in segments(tmp_path / "lake")} == before
    ingest(store, generate_records(200, seed=2))
    more = lake.sync(store, tmp_path / "lake", "n1")
    assert more.records == 200 and all(p not in before for p in map(lambda s: tmp_path / "lake" / s, more.segments))
    ids = lake_rows(tmp_path / "lake").column("request_id").to_pylist()
    assert len(ids) == len(set(ids)) == 500


def test_one_sync_finishes_a_killed_plan_and_then_exports_what_came_after_it(store, tmp_path):
    """Regression (#13): a sync that found a plan left by a killed one finished that plan only, and
    the records committed after it waited for the sync after."""
    ingest(store, generate_records(300, seed=6))
    lake.sync(store, tmp_path / "lake", "n1")
    ingest(store, generate_records(200, seed=7))
    state_file = tmp_path / "lake" / "_state" / "n1.json"
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({**state, "plan_end": 400}))  # killed after planning up to seq 400
    assert lake.sync(store, tmp_path / "lake", "n1").records == 200
    ids = lake_rows(tmp_path / "lake").column("request_id").to_pylist()
    assert len(ids) == len(set(ids)) == 500
    assert json.loads(state_file.read_text())["plan_end"] is None


def test_chunks_are_the_same_cuts_for_a_retried_plan():
    assert list(_chunks(0, 2_500_000)) == [(0, 1_000_000), (1_000_000, 2_000_000), (2_000_000, 2_500_000)]
    assert list(_chunks(1_000_000, 2_500_000)) == list(_chunks(0, 2_500_000))[1:]  # resumed after the first


def test_rows_without_a_seq_are_exported_once_in_files_numbered_0_0(store, tmp_path):
    ingest(store, generate_records(100, seed=3))
    store.writer.call(lambda con: con.execute("UPDATE ledger SET seq = NULL WHERE seq <= 40"))  # before migration 005
    lake.sync(store, tmp_path / "lake", "n1")
    legacy = [p for p in segments(tmp_path / "lake") if p.name == "n1-0-0.parquet"]
    assert legacy and sum(pq.read_metadata(p).num_rows for p in legacy) == 40
    lake.sync(store, tmp_path / "lake", "n1")
    ids = lake_rows(tmp_path / "lake").column("request_id").to_pylist()
    assert len(ids) == len(set(ids)) == 100


def test_a_rerating_reaches_the_lake_as_restated_rows_with_the_new_pricing(store, tmp_path):
    records = generate_records(400, seed=4)
    ingest(store, records)
    lake.sync(store, tmp_path / "lake", "n1")
    unpriced = {r["request_id"] for r in records if r["model"] == "unpriced-model"}
    store.add_rate_version(RateVersion(model="unpriced-model", effective_from=datetime(2026, 1, 1, tzinfo=UTC),
                                       input=Price(Decimal("1"), Decimal("2")),
                                       cached_input=Price(Decimal("0.1"), Decimal("0.2")),
                                       output=Price(Decimal("4"), Decimal("8"))))
    result = reprice(Context(store), start="2026-10-01", end="2026-12-01", dry_run=False)
    assert result["totals"]["changed"] == len(unpriced)
    synced = lake.sync(store, tmp_path / "lake", "n1")
    assert synced.records == 0 and synced.restated == len(unpriced)
    assert all(p.endswith(f"-r{result['run_id']}.parquet") for p in synced.segments)
    restated = lake_rows(tmp_path / "lake", originals_only=False)
    restated = restated.filter(restated.column("restatement").is_valid()).to_pylist()
    assert {r["request_id"] for r in restated} == unpriced
    with store.reading() as cur:
        stored = dict(cur.execute("SELECT request_id, cost_pico FROM ledger").fetchall())
    assert all(r["cost"].scaleb(12) == stored[r["request_id"]] and r["restated_at"] is not None for r in restated)
    assert lake.sync(store, tmp_path / "lake", "n1").restated == 0  # once


def test_a_directory_that_is_not_a_lake_and_a_bad_node_id_get_clear_errors(store, tmp_path):
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"x")
    with pytest.raises(lake.LakeError, match=r"is not a metering lake .* not empty"):
        lake.sync(store, other, "n1")
    (tmp_path / "file").write_text("x")
    with pytest.raises(lake.LakeError, match="is not a directory"):
        lake.sync(store, tmp_path / "file", "n1")
    for bad in ("", "a/b", "../x", "n 1", "x" * 65):
        with pytest.raises(lake.LakeError, match="node id"):
            lake.sync(store, tmp_path / "lake", bad)


@pytest.mark.e2e
def test_cli_lake_sync_on_a_file_and_on_a_served_file(tmp_path, server_factory):
    db = tmp_path / "node.duckdb"
    store = Store(db)
    ingest(store, generate_records(50, seed=5))
    store.close()
    run = [sys.executable, "-m", "metering.cli", "lake", "sync", "--db", str(db), "--lake", str(tmp_path / "lake"),
           "--node-id", "n1"]
    done = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "50 records exported" in done.stdout
    server = server_factory(db).start()
    held = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert held.returncode == 2 and "Traceback" not in held.stderr
    assert "serve --lake" in held.stderr
    server.stop()
    missing = subprocess.run([*run[:6], str(tmp_path / "nope.duckdb"), *run[7:]], capture_output=True, text=True)
    assert missing.returncode == 2 and "no such database file" in missing.stderr


KILLABLE = """
import sys
import metering.lake._sync as s
s.CHUNK_SEQ = 150
s.sync_file(sys.argv[1], sys.argv[2], "n1")
"""


def test_a_sync_killed_at_random_points_then_resumed_has_every_record_exactly_once(tmp_path):
    """SIGKILL a sync subprocess (small chunks, so a sync takes many steps) at random moments, adding
    records between runs; after a final sync every record is in the lake once, no temporary file
    is visible as a segment, and every name follows the layout."""
    db = tmp_path / "node.duckdb"
    rng = random.Random(13)
    total = 0
    kills = 0
    for round_ in range(6):
        store = Store(db)
        ingest(store, generate_records(700, seed=100 + round_, start=NOW - timedelta(days=4), span=timedelta(days=4)))
        store.close()
        total += 700
        proc = subprocess.Popen([sys.executable, "-c", KILLABLE, str(db), str(tmp_path / "lake")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.3, 2.5))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        if proc.returncode == 0:
            proc.stderr.close()
            continue
        error = proc.stderr.read().decode()
        proc.stderr.close()
        assert proc.returncode == -signal.SIGKILL, error[-2000:]
    final = subprocess.run([sys.executable, "-c", KILLABLE, str(db), str(tmp_path / "lake")],
                           capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    ids = lake_rows(tmp_path / "lake").column("request_id").to_pylist()
    assert len(ids) == total and len(set(ids)) == total
    for path in segments(tmp_path / "lake"):
        assert re.match(SEGMENT_NAME, path.name), path
    assert not list((tmp_path / "lake" / "usage").rglob(".*.tmp"))
    print(f"{kills} of 6 syncs killed")


def test_serve_with_a_bad_lake_or_node_id_stops_with_a_message(tmp_path):
    (tmp_path / "notalake").mkdir()
    (tmp_path / "notalake" / "x").write_text("x")
    env = {**os.environ, "METERING_ADMIN_TOKEN": "admin-token-for-tests-0123456789"}
    for args, message in ((["--lake", str(tmp_path / "notalake"), "--node-id", "n1"], "is not a metering lake"),
                          (["--lake", str(tmp_path / "lake"), "--node-id", "bad id"], "is not a node id"),
                          (["--lake", str(tmp_path / "lake")], "go together")):
        done = subprocess.run([sys.executable, "-m", "metering.cli", "serve", "--db", str(tmp_path / "s.duckdb"),
                               "--port", "1", *args], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
