"""The `metering` command: import (NDJSON, CSV, Parquet; to the file or via --url), keys, rates,
serve's refusals, and clear messages for a locked database or a malformed rate card."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import orjson
import polars as pl
import pytest

from tests.conftest import ADMIN, generate_records, record

pytestmark = pytest.mark.e2e


def run(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "metering.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def write_ndjson(path: Path, records: list[dict]) -> Path:
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in records) + b"\n")
    return path


def tabular(records: list[dict]) -> pl.DataFrame:
    rows = [{**r, "tags": orjson.dumps(r["tags"]).decode()} for r in records]
    return pl.DataFrame(rows)


def ledger_count(db: Path) -> int:
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT count(*) FROM ledger").fetchone()[0]
    finally:
        con.close()


def test_import_ndjson_csv_and_parquet_into_the_file_with_dedup(tmp_path):
    db = tmp_path / "m.duckdb"
    records = generate_records(3000, seed=5)
    nd = write_ndjson(tmp_path / "a.ndjson", records[:1000])
    tabular(records[1000:2000]).write_csv(tmp_path / "b.csv")
    tabular(records[2000:]).write_parquet(tmp_path / "c.parquet")
    r = run("import", str(nd), str(tmp_path / "b.csv"), str(tmp_path / "c.parquet"), "--db", str(db))
    assert r.returncode == 0, r.stderr
    assert "accepted 3000, duplicates 0, rejected 0" in r.stdout
    assert "import" in r.stderr  # the progress bar
    again = run("import", str(nd), "--db", str(db), "--quiet")
    assert "accepted 0, duplicates 1000, rejected 0" in again.stdout
    assert ledger_count(db) == 3000


def ledger_rows(db: Path) -> list[tuple]:
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT * EXCLUDE (received_at, seq) FROM ledger ORDER BY request_id").fetchall()
    finally:
        con.close()


def test_a_typed_parquet_file_is_checked_by_columns_and_stores_what_ndjson_stores(tmp_path):
    """Parquet with real types (zoned timestamps, integer counts, a map of tags) takes the column
    path; its bad rows are still reported by record number, with parse_record's words."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = generate_records(2500, seed=11)
    records[4] = dict(records[4], input_tokens=-3)
    records[2100] = dict(records[2100], endpoint="bogus")
    table = pa.table({
        "request_id": [r["request_id"] for r in records],
        "occurred_at": pa.array([datetime.fromisoformat(r["occurred_at"]) for r in records],
                                pa.timestamp("us", tz="Asia/Kolkata")),
        "api_key_id": [r["api_key_id"] for r in records],
        "model": [r["model"] for r in records],
        "endpoint": [r["endpoint"] for r in records],
        **{name: pa.array([r[name] for r in records], pa.int64())
           for name in ("input_tokens", "cached_tokens", "cache_write_tokens", "output_tokens", "thinking_tokens",
                        "web_search_requests")},
        "tags": pa.array([r["tags"] for r in records], pa.map_(pa.string(), pa.string())),
    })
    pq.write_table(table, tmp_path / "typed.parquet")
    r = run("import", str(tmp_path / "typed.parquet"), "--db", str(tmp_path / "p.duckdb"), "--quiet")
    assert r.returncode == 1 and "accepted 2498, duplicates 0, rejected 2" in r.stdout
    assert "record 5: input_tokens: must be a non-negative integer" in r.stderr
    assert "record 2101: endpoint: must be one of" in r.stderr
    r = run("import", str(write_ndjson(tmp_path / "same.ndjson", records)), "--db", str(tmp_path / "n.duckdb"),
            "--quiet")
    assert "accepted 2498" in r.stdout
    assert ledger_rows(tmp_path / "p.duckdb") == ledger_rows(tmp_path / "n.duckdb")
    again = run("import", str(tmp_path / "typed.parquet"), "--db", str(tmp_path / "p.duckdb"), "--quiet")
    assert "accepted 0, duplicates 2498, rejected 2" in again.stdout


def test_import_reports_bad_lines_and_still_stores_the_good_ones(tmp_path):
    db = tmp_path / "m.duckdb"
    path = tmp_path / "bad.ndjson"
    path.write_bytes(orjson.dumps(record("ok1")) + b"\n{oops\n" + orjson.dumps(record("neg", input_tokens=-3))
                     + b"\n" + orjson.dumps(record("ok2")) + b"\n")
    r = run("import", str(path), "--db", str(db), "--quiet")
    assert r.returncode == 1
    assert "accepted 2, duplicates 0, rejected 2" in r.stdout
    assert "record 2: line 2: not valid JSON" in r.stderr
    assert "record 3: input_tokens: must be a non-negative integer" in r.stderr
    assert ledger_count(db) == 2


def test_a_locked_database_gets_a_clear_message_and_url_goes_through_the_server(server_factory, tmp_path):
    server = server_factory(tmp_path / "held.duckdb").start()
    path = write_ndjson(tmp_path / "x.ndjson", generate_records(500, seed=9))
    r = run("import", str(path), "--db", str(server.db), "--quiet")
    assert r.returncode == 2
    assert "in use by another process" in r.stderr and "--url" in r.stderr and "Traceback" not in r.stderr
    r = run("import", str(path), "--url", server.url, "--quiet", env={"METERING_TOKEN": ADMIN})
    assert r.returncode == 0 and "accepted 500" in r.stdout, r.stderr
    r = run("keys", "add", "cli-key", "--account", "acme", "--url", server.url, env={"METERING_ADMIN_TOKEN": ADMIN})
    assert r.returncode == 0 and orjson.loads(r.stdout)["secret"].startswith("sk_")
    r = run("keys", "list", "--url", server.url, env={"METERING_ADMIN_TOKEN": ADMIN})
    assert "cli-key" in r.stdout and "acme" in r.stdout
    r = run("rates", "list", "--url", server.url, env={"METERING_ADMIN_TOKEN": ADMIN})
    assert "minimax-m2-7" in r.stdout and "input 0.15/0.3" in r.stdout
    server.stop()
    assert ledger_count(server.db) == 500


def test_keys_and_rates_on_the_file(tmp_path):
    db = str(tmp_path / "k.duckdb")
    r = run("keys", "add", "k1", "--account", "a1", "--secret", "sk_0123456789abcdef_cli", "--db", db)
    assert r.returncode == 0 and "secret" not in orjson.loads(r.stdout)
    r = run("keys", "add", "k1", "--account", "a1", "--db", db)
    assert r.returncode == 2 and "already registered" in r.stderr
    assert "k1" in run("keys", "list", "--db", db).stdout
    assert "minimax-m2-7" in run("rates", "list", "--db", db).stdout


def test_serve_refuses_without_an_admin_token(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("METERING_")}
    r = subprocess.run([sys.executable, "-m", "metering.cli", "serve", "--db", str(tmp_path / "s.duckdb")],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 2 and "METERING_ADMIN_TOKEN" in r.stderr and "--dev" in r.stderr


def test_a_malformed_rate_card_stops_start_up_naming_file_model_and_field(tmp_path):
    card = tmp_path / "card.toml"
    card.write_text('[[models.acme-1.versions]]\neffective_from = 2026-01-01T00:00:00Z\n'
                    'input = { current = "0.1", list = "0.2" }\ncached_input = { current = "x", list = "0.1" }\n'
                    'output = { current = "1", list = "2" }\n')
    r = run("serve", "--db", str(tmp_path / "s.duckdb"), "--rate-card", str(card),
            env={"METERING_ADMIN_TOKEN": ADMIN})
    assert r.returncode == 2
    assert str(card) in r.stderr and "'acme-1'" in r.stderr and "cached_input" in r.stderr
    assert "Traceback" not in r.stderr


def test_editing_a_seeded_price_in_place_is_refused(tmp_path):
    db = str(tmp_path / "e.duckdb")
    assert run("rates", "list", "--db", db).returncode == 0  # seeds the shipped card
    edited = tmp_path / "card.toml"
    text = (Path(__file__).parents[2] / "data" / "rate_card.toml").read_text().replace('"0.15"', '"0.16"')
    edited.write_text(text)
    r = run("serve", "--db", db, "--rate-card", str(edited), env={"METERING_ADMIN_TOKEN": ADMIN})
    assert r.returncode == 2 and "add a new version" in r.stderr


def test_dev_mode_prints_generated_tokens_once(server_factory, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("METERING_")}
    from tests.conftest import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "metering.cli", "serve", "--dev", "--db", str(tmp_path / "d.duckdb"),
                             "--port", str(port), "--log-level", "warning"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        lines = [proc.stdout.readline() for _ in range(4)]
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    text = "".join(lines)
    assert "METERING_ADMIN_TOKEN=adm_" in text and "METERING_INGEST_TOKEN=ing_" in text


def test_report_and_reprice_on_the_file_and_through_the_server(server_factory, tmp_path):
    db = tmp_path / "r.duckdb"
    path = write_ndjson(tmp_path / "r.ndjson", generate_records(2000, seed=3))
    assert run("import", str(path), "--db", str(db), "--quiet").returncode == 0
    r = run("report", "daily", "--start", "2026-11-01", "--end", "2026-11-26", "--tz", "Asia/Kolkata", "--db", str(db))
    assert r.returncode == 0 and r.stdout.startswith("date,account_id,api_key_id,model,requests")
    assert r.stdout.strip().splitlines()[-1].endswith(",total")
    out = tmp_path / "daily.xlsx"
    r = run("report", "daily", "--format", "xlsx", "--output", str(out), "--db", str(db))
    assert r.returncode == 0 and out.read_bytes()[:2] == b"PK"
    r = run("report", "statement", "--account", "unassigned", "--month", "2026-11", "--format", "json", "--db", str(db))
    statement = orjson.loads(r.stdout)
    assert statement["account_id"] == "unassigned" and statement["lines"]
    r = run("report", "focus", "--start", "2026-11-01", "--end", "2026-11-26", "--format", "parquet", "--db", str(db))
    assert r.returncode == 2 and "--output" in r.stderr
    r = run("report", "statement", "--account", "x", "--month", "2026-11", "--format", "parquet", "-o",
            str(tmp_path / "s.parquet"), "--db", str(db))
    assert r.returncode == 2 and "format" in r.stderr

    r = run("reprice", "--start", "2026-11-01", "--end", "2026-12-01", "--dry-run", "--db", str(db))
    assert r.returncode == 0 and "dry run: would change 0 of 2000 records" in r.stdout

    server = server_factory(db).start()
    env = {"METERING_ADMIN_TOKEN": ADMIN}
    r = run("report", "daily", "--start", "2026-11-01", "--end", "2026-11-26", "--tz", "Asia/Kolkata",
            "--url", server.url, env=env)
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1].endswith(",total")
    r = run("reprice", "--start", "2026-11-01", "--end", "2026-12-01", "--url", server.url, env=env)
    assert r.returncode == 0 and "changed 0 of 2000 records" in r.stdout and "audit entry 1" in r.stdout


def test_budgets_on_the_file_and_through_the_server(server_factory, tmp_path):
    db = tmp_path / "b.duckdb"
    spend = [record(f"b{i}", api_key_id="key-a", occurred_at=datetime.now(UTC).isoformat(), input_tokens=1_000_000,
                    cached_tokens=0, output_tokens=0, thinking_tokens=None) for i in range(4)]  # 0.60 USD
    assert run("import", str(write_ndjson(tmp_path / "s.ndjson", spend)), "--db", str(db), "--quiet").returncode == 0
    r = run("budgets", "add", "--scope", "api_key_id=key-a", "--amount", "1.00", "--db", str(db))
    assert r.returncode == 0, r.stderr
    budget = orjson.loads(r.stdout)
    assert budget["thresholds"] == ["0.5", "0.8", "1.0"] and budget["scope"] == {"api_key_id": "key-a"}
    status = orjson.loads(run("budgets", "status", "key-a", "--db", str(db)).stdout)
    assert status["budgets"][0]["spent"] == "0.6" and status["exceeded"] is False
    check = orjson.loads(run("budgets", "check", "--db", str(db)).stdout)
    assert len(check["alerts_written"]) == 1
    assert orjson.loads(run("budgets", "check", "--db", str(db)).stdout)["alerts_written"] == []
    listed = orjson.loads(run("budgets", "alerts", "--db", str(db)).stdout)["data"]
    assert [a["status"] for a in listed] == ["no_endpoint"]
    r = run("budgets", "add", "--scope", "team=x", "--amount", "1", "--db", str(db))
    assert r.returncode == 2 and "scope" in r.stderr

    server = server_factory(db).start()
    env = {"METERING_ADMIN_TOKEN": ADMIN}
    assert len(orjson.loads(run("budgets", "list", "--url", server.url, env=env).stdout)["data"]) == 1
    r = run("budgets", "delete", budget["id"], "--url", server.url, env=env)
    assert r.returncode == 0 and "deleted" in r.stdout
    assert orjson.loads(run("budgets", "list", "--url", server.url, env=env).stdout)["data"] == []
