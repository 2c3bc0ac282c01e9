"""A full disk: the database on a small tmpfs this test mounts (root only). Ingest answers 503
with a clear error once the file cannot be written, nothing acknowledged is lost, reads go on,
and ingest works again when space returns, across a restart too."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import httpx
import orjson
import pytest

from tests.conftest import ADMIN, INGEST, Server, generate_records

pytestmark = pytest.mark.e2e


@pytest.fixture
def small_disk(tmp_path: Path):
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root")
    mountpoint = tmp_path / "disk"
    mountpoint.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mountpoint)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def stored(server: Server) -> int:
    r = httpx.get(f"{server.url}/v1/usage", params={"start": "2026-01-01", "end": "2027-01-01", "bucket": "month"},
                  headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["totals"]["requests"]


def test_a_full_disk_is_a_503_and_nothing_acknowledged_is_lost(small_disk: Path, tmp_path: Path):
    server = Server(small_disk / "metering.duckdb").start()
    acknowledged: list[str] = []
    refused: list[dict] = []
    records = generate_records(60_000, seed=21, prefix="full")
    try:
        with httpx.Client(base_url=server.url, timeout=60, headers={"Authorization": f"Bearer {INGEST}"}) as client:
            for start in range(0, len(records), 1000):
                batch = records[start:start + 1000]
                r = client.post("/v1/usage", content=orjson.dumps(batch), headers={"Content-Type": "application/json"})
                if r.status_code == 200:
                    assert r.json()["accepted"] == len(batch)
                    acknowledged += [x["request_id"] for x in batch]
                    continue
                assert r.status_code == 503, r.text
                error = r.json()["error"]
                assert error["code"] == "storage_unavailable"
                assert "No space left on device" in error["message"] and "nothing of this request was stored" in \
                    error["message"]
                refused = batch
                break
            assert refused, "the disk never filled up"
            assert acknowledged, "nothing fitted at all"
            # Still serving: health, reads, and the acknowledged records all there.
            assert client.get("/healthz").status_code == 200
            assert stored(server) == len(acknowledged)
            # Space returns: the refused batch goes in, as new records.
            subprocess.run(["mount", "-o", "remount,size=256m", str(small_disk)], check=True)
            r = client.post("/v1/usage", content=orjson.dumps(refused), headers={"Content-Type": "application/json"})
            assert r.status_code == 200 and r.json()["accepted"] == len(refused), r.text
        assert stored(server) == len(acknowledged) + len(refused)
    finally:
        server.kill()  # no clean shutdown: what was acknowledged must be in the file (its log) already
    server = Server(small_disk / "metering.duckdb").start()
    try:
        assert stored(server) == len(acknowledged) + len(refused)
    finally:
        server.stop()
