"""`metering reconcile` on the database file and through a running server (--url): the same rows,
exit 1 on drift and 0 when everything matches, documents written with -o, clear errors."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import openpyxl
import pytest

from tests.conftest import ADMIN, INGEST

pytestmark = pytest.mark.e2e
DATA = Path(__file__).parents[1] / "data" / "reconcile"
ENV = {"METERING_RATE_CARD": str(DATA / "rate_card.toml")}
PLANTED = {("2026-11-02", "gpt-4.1-mini"), ("2026-11-03", "gpt-4o-mini"), ("2026-11-04", "gpt-4.1"),
           ("2026-11-05", "gpt-4.1")}


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "metering.cli", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **ENV})


def split_pages(tmp_path: Path) -> list[str]:
    """The two pages of the OpenAI fixture as two files, as a script paging through the API would save them."""
    paths = []
    for i, page in enumerate(json.loads((DATA / "openai_completions_by_model.json").read_text()), start=1):
        path = tmp_path / f"openai-page-{i}.json"
        path.write_text(json.dumps(page))
        paths.append(str(path))
    return paths


def drifted(result: dict) -> set[tuple[str, str]]:
    return {(r["date"], r["model"]) for r in result["rows"] if r["status"] == "drift"}


RANGE = ("--start", "2026-11-01", "--end", "2026-11-06", "--models", "gpt-*,o3-*")


def test_reconcile_on_the_database_file(tmp_path):
    db = tmp_path / "m.duckdb"
    r = run("import", str(DATA / "ledger.ndjson"), "--db", str(db), "--quiet")
    assert r.returncode == 0 and "accepted 60" in r.stdout, r.stderr
    r = run("reconcile", "--provider", "openai", *split_pages(tmp_path), *RANGE, "--format", "json", "--db", str(db))
    assert r.returncode == 1, r.stderr  # drift
    result = json.loads(r.stdout)
    assert drifted(result) == PLANTED and result["summary"]["pages"] == 2
    assert "drift: 2026-11-02 gpt-4.1-mini: output_tokens: openai" in r.stderr
    assert "openai [2026-11-01, 2026-11-06): 12 rows, 8 match, 4 drift" in r.stderr

    r = run("reconcile", "--provider", "anthropic", str(DATA / "anthropic_messages_by_api_key.json"), "--start",
            "2026-11-03", "--end", "2026-11-05", "--models", "claude-sonnet-*,claude-haiku-*", "--split-by",
            "api_key_id", "--map", "apikey_01Rj2N8SVvo6BePZj99NhmiT=key-a", "--map",
            "apikey_01HxQ4mWc3Lp7ZkV2bTn8sYe=key-b", "--format", "json", "--db", str(db))
    assert r.returncode == 1, r.stderr
    assert [(x["date"], x["model"], x["group"]) for x in json.loads(r.stdout)["rows"] if x["status"] == "drift"] == [
        ("2026-11-03", "claude-sonnet-4-5", "key-a")]

    r = run("reconcile", "--provider", "openai", *split_pages(tmp_path), "--start", "2026-11-05", "--end",
            "2026-11-06", "--models", "o3-mini", "--db", str(db))
    assert r.returncode == 0, r.stderr  # everything matches
    assert "1 rows, 1 match, 0 drift" in r.stderr and r.stdout.startswith("# document: provider usage reconciliation")


def test_reconcile_through_the_server_gives_the_same_answer_and_writes_documents(tmp_path, server_factory):
    server = server_factory(extra_env=ENV).start()
    r = run("import", str(DATA / "ledger.ndjson"), "--url", server.url, "--token", INGEST, "--quiet")
    assert r.returncode == 0 and "accepted 60" in r.stdout, r.stderr
    remote = ("--url", server.url, "--token", ADMIN)
    pages = split_pages(tmp_path)
    r = run("reconcile", "--provider", "openai", *pages, *RANGE, "--format", "json", *remote)
    assert r.returncode == 1, r.stderr
    over_http = json.loads(r.stdout)
    assert drifted(over_http) == PLANTED

    out = tmp_path / "reconcile.csv"
    r = run("reconcile", "--provider", "openai", *pages, *RANGE, "-o", str(out), *remote)
    assert r.returncode == 1 and f"wrote {out}" in r.stderr
    text = out.read_text()
    rows = list(csv.DictReader(io.StringIO("\n".join(x for x in text.splitlines() if not x.startswith("# ")))))
    assert {(x["date"], x["model"]) for x in rows if x["status"] == "drift"} == PLANTED
    assert [x["provider_cost"] for x in rows] == [x["provider_cost"] or "" for x in over_http["rows"]]

    book = tmp_path / "reconcile.xlsx"
    r = run("reconcile", "--provider", "openai", *pages, *RANGE, "--format", "xlsx", "-o", str(book), *remote)
    assert r.returncode == 1, r.stderr
    sheet = openpyxl.load_workbook(book).active
    assert sheet["A1"].value == "document"
    assert sum(1 for row in sheet.iter_rows(values_only=True) if row[2] == "drift") == 4

    r = run("reconcile", "--provider", "openai", *pages, "--start", "1999-01-01", "--end", "2026-11-06", *remote)
    assert r.returncode == 2
    assert "server answered 400: start: must be between 2000-01-01 and 2100-01-01" in r.stderr

    server.stop()  # the file is free again: the database file gives the answer the server gave
    r = run("reconcile", "--provider", "openai", *pages, *RANGE, "--format", "json", "--db", str(server.db))
    assert r.returncode == 1, r.stderr
    assert json.loads(r.stdout)["rows"] == over_http["rows"]


def test_reconcile_refuses_bad_files_and_options_clearly(tmp_path):
    junk = tmp_path / "junk.json"
    junk.write_text("{not json")
    r = run("reconcile", "--provider", "openai", str(junk), "--start", "2026-11-01", "--end", "2026-11-02",
            "--db", str(tmp_path / "m.duckdb"))
    assert r.returncode == 2 and f"metering: error: {junk}: not valid JSON" in r.stderr
    r = run("reconcile", "--provider", "openai", str(tmp_path / "missing.json"), "--start", "2026-11-01", "--end",
            "2026-11-02")
    assert r.returncode == 2 and "missing.json: no such file" in r.stderr
    r = run("reconcile", "--provider", "openai", str(DATA / "openai_completions_by_model.json"), "--start",
            "2026-11-01", "--end", "2026-11-02", "--format", "xlsx")
    assert r.returncode == 2 and "--format xlsx is binary: give --output FILE" in r.stderr
    r = run("reconcile", "--provider", "openai", str(DATA / "anthropic_messages_by_model.json"), "--start",
            "2026-11-01", "--end", "2026-11-02", "--db", str(tmp_path / "m.duckdb"))
    assert r.returncode == 2 and "use provider=anthropic" in r.stderr
