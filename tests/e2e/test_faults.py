"""Crash safety: SIGKILL `metering serve` at random moments during concurrent ingest, budget
evaluation and webhook delivery, restart it, and check that nothing acknowledged is lost or
doubled, that the rollup and reports agree with the ledger, and that no alert is lost or repeated.

CI runs a few cycles; run many with `METERING_FAULT_CYCLES=50 .venv/bin/pytest -s tests/e2e/test_faults.py`.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal

import duckdb
import httpx
import pytest

from tests.conftest import ADMIN, INGEST, auth
from tests.e2e.test_alerts import SECRET, Receiver

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
CYCLES = int(os.environ.get("METERING_FAULT_CYCLES", "3"))


def test_random_sigkills_lose_nothing_and_repeat_no_alert(server_factory, tmp_path):
    rng = random.Random(2026)
    receiver = Receiver()
    server = server_factory(tmp_path / "faults.duckdb",
                            extra_env={"METERING_WEBHOOK_RETRY_SCHEDULE": "0.2,0.5,1,2"}).start()
    thresholds = [f"0.{i}" for i in range(1, 10)] + ["1.0"]
    r = httpx.post(f"{server.url}/v1/budgets", headers=auth(ADMIN), timeout=30, json={
        "scope": {"all": True}, "amount": "2.00", "thresholds": thresholds, "webhook_url": receiver.url,
        "webhook_secret": SECRET})
    assert r.status_code == 201
    acked: list[str] = []
    lock = threading.Lock()
    counter = iter(range(10**9))
    for cycle in range(CYCLES):
        stop = threading.Event()

        def client(seed: int) -> None:
            local = random.Random(seed)
            with httpx.Client(base_url=server.url, headers=auth(INGEST), timeout=10) as http:
                while not stop.is_set():
                    with lock:
                        ids = [f"f-{next(counter)}" for _ in range(local.randint(1, 40))]
                    batch = [{"request_id": i, "occurred_at": datetime.now(UTC).isoformat(), "api_key_id":
                              f"key-{local.randint(0, 5)}", "model": "minimax-m2-7", "input_tokens": 10_000,
                              "cached_tokens": 0, "output_tokens": 100} for i in ids]  # 0.0016 USD each
                    try:
                        r = http.post("/v1/usage", json=batch)
                    except httpx.HTTPError:
                        return
                    if r.status_code == 200:
                        with lock:
                            acked.extend(ids)

        threads = [threading.Thread(target=client, args=(rng.randrange(10**6),)) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(rng.uniform(0.3, 1.5))
        server.kill()  # ingest, debounced evaluation and deliveries are all in flight
        stop.set()
        for t in threads:
            t.join()
        server.start()
        sample = rng.sample(acked, min(20, len(acked)))
        with httpx.Client(base_url=server.url, headers=auth(ADMIN), timeout=30) as http:
            for request_id in sample:
                assert http.get(f"/v1/records/{request_id}").status_code == 200, f"cycle {cycle}: {request_id} lost"

    # Settle: evaluate once more and let the sender deliver what is due.
    httpx.post(f"{server.url}/v1/budgets/check", headers=auth(ADMIN), timeout=30)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        alerts = httpx.get(f"{server.url}/v1/alerts", headers=auth(ADMIN), timeout=30).json()["data"]
        if alerts and all(a["status"] == "delivered" for a in alerts):
            break
        time.sleep(0.2)
    totals = httpx.get(f"{server.url}/v1/reports/daily", headers=auth(ADMIN), timeout=30,
                       params={"start": "2026-01-01", "end": "2027-12-31"}).json()["totals"]
    server.stop()
    receiver.close()

    con = duckdb.connect(str(server.db), read_only=True)
    stored = Counter(row[0] for row in con.execute("SELECT request_id FROM ledger").fetchall())
    ledger_requests, ledger_cost = con.execute("SELECT count(*), sum(cost_pico) FROM ledger").fetchall()[0]
    rollup_requests, rollup_cost = con.execute("SELECT sum(requests), sum(cost_pico) FROM usage_rollup_live").fetchall()[0]
    con.close()
    assert not [i for i in acked if i not in stored], "acknowledged records were lost"
    assert max(stored.values()) == 1
    assert (rollup_requests, rollup_cost) == (ledger_requests, ledger_cost)
    assert totals["requests"] == ledger_requests and Decimal(totals["cost"]) == Decimal(ledger_cost).scaleb(-12)

    crossed = [a["payload"]["data"]["threshold"] for a in alerts]
    assert len(crossed) == len(set(crossed)), "an alert fired twice"
    spent = Decimal(ledger_cost).scaleb(-12)
    assert set(crossed) == {t for t in thresholds if Decimal(t) * 2 <= spent}, "an alert was lost"
    assert all(a["status"] == "delivered" for a in alerts)
    ids = {a["id"] for a in alerts}
    delivered = {d["headers"]["webhook-id"] for d in receiver.received}
    assert delivered == ids  # every alert reached the receiver; nothing else did
    print(f"\n{CYCLES} SIGKILL cycles: {len(acked)} acknowledged records, all present once; "
          f"{len(alerts)} alerts, {len(receiver.received)} deliveries of {len(ids)} webhook-ids")
