"""The real server in a subprocess: acknowledged records survive SIGKILL, exactly once."""

from __future__ import annotations

import threading
import time

import duckdb
import httpx
import pytest

from tests.conftest import ADMIN, INGEST, auth, generate_records

pytestmark = pytest.mark.e2e


def test_every_acknowledged_record_survives_sigkill_exactly_once(server_factory, tmp_path):
    server = server_factory(tmp_path / "durable.duckdb").start()
    records = generate_records(40_000, seed=11, prefix="dur")
    acked: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(worker: int) -> None:
        mine = records[worker::8]
        size = 1 if worker % 2 else 50  # single-record POSTs and small batches at once
        with httpx.Client(base_url=server.url, headers=auth(INGEST), timeout=10) as http:
            for i in range(0, len(mine), size):
                if stop.is_set():
                    return
                batch = mine[i:i + size]
                try:
                    r = http.post("/v1/usage", json=batch)
                except httpx.HTTPError:
                    return  # the server died mid-request: not acknowledged
                assert r.status_code == 200, r.text
                with lock:
                    acked.extend(x["request_id"] for x in batch)

    threads = [threading.Thread(target=client, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(acked) < 3000 and time.monotonic() < deadline:
        time.sleep(0.01)
    server.kill()  # SIGKILL, mid-stream
    stop.set()
    for t in threads:
        t.join()
    assert len(acked) >= 3000, "the clients did not get far enough before the kill"

    # Restart on the same file: recovery replays the WAL.
    server.start()
    with httpx.Client(base_url=server.url, headers=auth(ADMIN), timeout=30) as http:
        totals = http.get("/v1/usage", params={"start": "2026-01-01", "end": "2027-01-01"}).json()["totals"]
        # Re-sending everything acknowledged: all duplicates, nothing stored twice.
        by_id = {r["request_id"]: r for r in records}
        again = [by_id[i] for i in acked]
        dup = 0
        for i in range(0, len(again), 5000):
            body = http.post("/v1/usage", json=again[i:i + 5000], headers=auth(INGEST)).json()
            assert body["accepted"] == 0 and body["rejected"] == 0
            dup += body["duplicates"]
        assert dup == len(acked)
    server.stop()

    con = duckdb.connect(str(server.db), read_only=True)
    stored = {row[0] for row in con.execute("SELECT request_id FROM ledger").fetchall()}
    (count,) = con.execute("SELECT count(*) FROM ledger").fetchone()
    (rolled,) = con.execute("SELECT sum(requests) FROM usage_rollup_live").fetchone()
    con.close()
    assert set(acked) <= stored  # nothing acknowledged was lost
    assert count == len(stored)  # nothing stored twice
    assert rolled == count == totals["requests"]  # the rollup recovered with the ledger
