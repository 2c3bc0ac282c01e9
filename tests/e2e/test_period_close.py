"""Period close against the real server (issue 15): SIGKILL during a close leaves the month closed whole
or not at all; `metering periods close|list` on the file and through --url."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, date, datetime
from decimal import Decimal

import duckdb
import httpx
import pytest

from tests.conftest import ADMIN, INGEST, generate_records

pytestmark = pytest.mark.e2e
H = {"Authorization": f"Bearer {ADMIN}"}
ACCOUNTS = [f"acct-{i}" for i in range(4)] + ["unassigned"]


def months_ago(n: int) -> date:
    today = datetime.now(UTC).date()
    index = today.year * 12 + today.month - 1 - n
    return date(index // 12, index % 12 + 1, 1)


def month_records(first: date, n: int, seed: int, prefix: str) -> list[dict]:
    nxt = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    return generate_records(n, seed=seed, start=start, span=datetime(nxt.year, nxt.month, 1, tzinfo=UTC) - start,
                            keys=12, prefix=prefix)


def post_records(url: str, records: list[dict]) -> None:
    with httpx.Client(base_url=url, timeout=120, headers={"Authorization": f"Bearer {INGEST}"}) as c:
        for i in range(0, len(records), 10_000):
            r = c.post("/v1/usage", json=records[i:i + 10_000])
            assert r.status_code == 200, r.text[:300]


def check_whole(url: str, month: str) -> dict | None:
    """The month's period if closed, checked whole: every account's statement, FOCUS and the stored row
    counts agree with the period row and the ledger. None if the month is not closed."""
    periods = httpx.get(f"{url}/v1/periods", headers=H, timeout=60).json()["data"]
    found = [p for p in periods if p["month"] == month]
    if not found:
        return None
    (period,) = found
    total = Decimal(0)
    for account in ACCOUNTS:
        body = httpx.get(f"{url}/v1/reports/statement", params={"account": account, "month": month}, headers=H,
                         timeout=60).json()
        assert body["status"] == "closed"
        total += Decimal(body["totals"]["amount"])
    first = f"{month}-01"
    y, m = int(month[:4]), int(month[5:7])
    nxt = f"{y + m // 12}-{m % 12 + 1:02d}-01"
    focus = list(csv.DictReader(io.StringIO(httpx.get(f"{url}/v1/reports/focus", params={"start": first, "end": nxt},
                                                      headers=H, timeout=60).text)))
    usage = httpx.get(f"{url}/v1/usage", params={"start": first, "end": nxt, "bucket": "month"}, headers=H,
                      timeout=60).json()
    ledger = Decimal(usage["totals"]["cost"])
    assert total == Decimal(period["amount"]) == ledger == sum(Decimal(r["BilledCost"]) for r in focus)
    assert len(focus) == period["focus_rows"]
    return period


def stored_counts(db, month: str) -> tuple[int, int, int, int]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return tuple(con.execute(f"SELECT count(*) FROM {t} WHERE month = ?", [month]).fetchone()[0]
                     for t in ("billing_periods", "closed_statements", "closed_statement_lines",
                               "closed_focus_lines"))
    finally:
        con.close()


def test_sigkill_during_a_close_leaves_the_month_closed_whole_or_not_at_all(server_factory, tmp_path):
    db = tmp_path / "served.duckdb"
    server = server_factory(db).start()
    with httpx.Client(base_url=server.url, headers=H, timeout=60) as c:
        for i in range(10):
            assert c.post("/v1/keys", json={"api_key_id": f"key-{i}", "account_id": ACCOUNTS[i % 4]}).status_code == 201
    first = months_ago(2)
    month = first.strftime("%Y-%m")
    post_records(server.url, month_records(first, 150_000, seed=7, prefix="k"))
    outcomes = []
    for delay in (0.05, 0.4, 1.2):
        answers: list = []

        def close(url=server.url, out=answers) -> None:
            try:
                out.append(httpx.post(f"{url}/v1/periods/close", json={"month": month}, headers=H, timeout=120))
            except httpx.HTTPError as exc:
                out.append(exc)

        thread = threading.Thread(target=close)
        thread.start()
        time.sleep(delay)
        server.kill()  # SIGKILL, wherever the close is
        thread.join()
        server = server_factory(db, port=server.port).start()
        period = check_whole(server.url, month)
        outcomes.append(period is not None)
        print(f"SIGKILL {delay} s into the close: {'closed whole' if period else 'not closed'}")
        server.stop()
        counts = stored_counts(db, month)
        if period is None:
            assert counts == (0, 0, 0, 0)  # nothing of a close that did not commit
        else:
            assert counts == (1, period["accounts"], period["statement_lines"], period["focus_rows"])
        server = server_factory(db, port=server.port).start()
        if period is not None:
            break
    if not any(outcomes):  # every kill came first: a close now completes, and is whole
        r = httpx.post(f"{server.url}/v1/periods/close", json={"month": month}, headers=H, timeout=120)
        assert r.status_code == 200 and r.json()["closed_now"] is True
        assert check_whole(server.url, month) is not None
    closed = httpx.post(f"{server.url}/v1/periods/close", json={"month": month}, headers=H, timeout=120).json()
    assert closed["closed_now"] is False  # after the restart, closed is closed


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "metering.cli", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_periods_close_and_list_on_the_file_and_through_url(server_factory, tmp_path):
    db = tmp_path / "m.duckdb"
    first, second = months_ago(3), months_ago(2)
    path = tmp_path / "r.ndjson"
    import orjson

    path.write_bytes(b"\n".join(orjson.dumps(r) for r in month_records(first, 500, 1, "a")
                                + month_records(second, 500, 2, "b")))
    assert run("import", str(path), "--db", str(db), "--quiet").returncode == 0
    out_of_order = run("periods", "close", "--month", second.strftime("%Y-%m"), "--db", str(db))
    assert out_of_order.returncode == 2 and f"close {first.strftime('%Y-%m')} first" in out_of_order.stderr
    done = run("periods", "close", "--month", first.strftime("%Y-%m"), "--db", str(db))
    assert done.returncode == 0, done.stderr
    assert f"{first.strftime('%Y-%m')} (UTC) closed:" in done.stdout and "by cli" in done.stdout
    listing = run("periods", "list", "--db", str(db))
    assert listing.returncode == 0 and first.strftime("%Y-%m") in listing.stdout
    assert f"next to close: {second.strftime('%Y-%m')} (closable now)" in listing.stdout

    server = server_factory(db).start()
    env = {"METERING_URL": server.url, "METERING_TOKEN": ADMIN}
    locked = run("periods", "list", "--db", str(db))
    assert locked.returncode == 2 and "--url" in locked.stderr  # the server holds the file
    via = run("periods", "close", "--month", second.strftime("%Y-%m"), env=env)
    assert via.returncode == 0 and "by api" in via.stdout, via.stderr
    again = run("periods", "close", "--month", second.strftime("%Y-%m"), env=env)
    assert again.returncode == 0 and "already closed (nothing changed)" in again.stdout
    listing = run("periods", "list", env=env)
    assert listing.stdout.count(" cli ") == 1 and listing.stdout.count(" api ") == 1, listing.stdout
