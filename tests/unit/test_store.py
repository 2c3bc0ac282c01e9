"""The store: migrations recorded once, and the single writer's group commit."""

from __future__ import annotations

import threading
import time

from metering.records import parse_record
from metering.store.db import Store, migrations
from metering.store.writer import PricedRecords
from tests.conftest import NOW, record


def batch(*ids: str) -> PricedRecords:
    """Records as the writer takes them (unpriced: pricing is not what these tests are about)."""
    return PricedRecords([parse_record(record(i), now=NOW) for i in ids], [(None, None, None)] * len(ids))


def test_migrations_are_recorded_and_applied_once(tmp_path):
    path = tmp_path / "m.duckdb"
    Store(path).close()
    with Store(path) as again, again.reading() as cur:
        rows = cur.execute("SELECT version, name FROM schema_migrations ORDER BY version").fetchall()
    assert rows == [(v, name) for v, name, _ in migrations()]
    assert rows[0] == (1, "001_initial.sql")


def test_concurrent_batches_queued_during_a_write_share_one_transaction(store):
    release = threading.Event()
    started = threading.Event()

    def hold(con):
        started.set()
        release.wait(30)

    blocker = threading.Thread(target=store.writer.call, args=(hold,))
    blocker.start()
    started.wait(30)
    before = store.writer.groups_committed
    futures = [store.writer.submit_ingest(batch(f"g{i}")) for i in range(100)]
    release.set()
    outcomes = [f.result(30) for f in futures]
    blocker.join()
    assert all(o[0].status == "accepted" for o in outcomes)
    assert store.writer.groups_committed - before == 1  # 100 requests, one commit


def test_a_failed_transaction_fails_its_requests_and_stores_nothing(store):
    def boom(con):
        con.execute("INSERT INTO api_keys VALUES ('x', 'a', NULL, 'd', now()::TIMESTAMP)")
        raise RuntimeError("boom")

    import pytest

    with pytest.raises(RuntimeError):
        store.writer.call(boom)
    with store.reading() as cur:
        assert cur.execute("SELECT count(*) FROM api_keys").fetchone()[0] == 0
    assert store.writer.ingest(batch("after"))[0].status == "accepted"


def wait_for_watermark(store, value: int) -> int:
    deadline = time.monotonic() + 10
    while True:
        with store.reading() as cur:
            (watermark,) = cur.execute("SELECT watermark FROM rollup_state").fetchall()[0]
        if watermark == value or time.monotonic() > deadline:
            return watermark
        time.sleep(0.02)


def test_the_rollup_catches_up_in_the_background_and_after_a_crash(tmp_path, monkeypatch):
    from metering.store import writer as writer_module

    monkeypatch.setattr(writer_module, "FLUSH_SECONDS", 0.05)
    path = tmp_path / "r.duckdb"
    with Store(path) as s:
        s.writer.ingest(batch(*(f"r{i}" for i in range(10))))
        assert wait_for_watermark(s, 10) == 10
        with s.reading() as cur:
            assert cur.execute("SELECT sum(requests) FROM usage_rollup").fetchall()[0][0] == 10
        # Simulate a crash that left a tail: rows past the watermark, not in the rollup.
        s.writer.call(lambda con: con.execute("UPDATE rollup_state SET watermark = 4"))
        s.writer.call(lambda con: con.execute("DELETE FROM usage_rollup"))
        s.writer.call(lambda con: con.execute(
            "UPDATE ledger SET seq = NULL WHERE seq <= 4"))  # as if rows 1-4 were rolled up long ago...
    with Store(path) as s:  # ...the restart rolls up the tail 5-10 without new traffic
        assert wait_for_watermark(s, 10) == 10
        with s.reading() as cur:
            assert cur.execute("SELECT sum(requests) FROM usage_rollup").fetchall()[0][0] == 6


def test_a_read_past_its_time_limit_is_interrupted_with_a_query_timeout_issue_11(store):
    import pytest

    from metering.errors import QueryTimeout

    with pytest.raises(QueryTimeout) as caught, store.reading(timeout=0.2) as cur:
        cur.execute("SELECT count(*) FROM range(100000000000) t(i) WHERE i % 7 = 3").fetchall()  # minutes of work
    assert caught.value.status == 429 and caught.value.retry_after >= 1
    with store.reading(timeout=5) as cur:  # the store goes on
        assert cur.execute("SELECT 1").fetchall() == [(1,)]
