"""The benchmark suite runs end to end at its smallest size, so it never rots. Figures are not
asserted: timing never fails a test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_benchmark_suite_smoke_run_writes_json_and_markdown(tmp_path):
    root = Path(__file__).parents[1]
    r = subprocess.run([sys.executable, "-m", "benchmarks.run", "--size", "smoke", "--out", str(tmp_path)],
                       cwd=root, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    document = json.loads((tmp_path / "results.json").read_text())
    scenarios = [x["scenario"] for x in document["results"]]
    for expected in ("single-record POSTs", "1,000-record batches", "Parquet", "daily report", "storage",
                     "budget status", "while ingest runs", "pricing", "OTLP trace export, protobuf", "UsageClient",
                     "provider reconciliation", "period close", "lake sync", "lake storage", "over the lake with Spark",
                     "the request_id key on disk", "while ingest runs flat out", "into a ledger of",
                     "under granian"):
        assert any(expected in name for name in scenarios), (expected, scenarios)
    assert all(x["figure"] and x["reference"] for x in document["results"])
    assert "| scenario | figure | reference (same run) |" in (tmp_path / "results.md").read_text()
