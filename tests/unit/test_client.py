"""The client's parts without a server: the disk spool (durability, group fsync, lanes, torn
lines, segments, the cursor), the meaning of each HTTP answer, Retry-After, backoff, and what
`send` refuses at once. Delivery against the real server: tests/e2e/test_client.py."""

from __future__ import annotations

import os
import random
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import orjson
import pytest

from metering.client import QueueFull, UsageClient
from metering.client import _spool as spool_module
from metering.client._api import backoff, classify, retry_after
from metering.client._spool import MemoryBuffer, Spool
from tests.conftest import INGEST, free_port, record

UNREACHABLE = f"http://127.0.0.1:{free_port()}"  # nothing listens there


def line(i: int) -> bytes:
    return orjson.dumps(record(f"req-{i}")) + b"\n"


def drain(spool: Spool, batch: int = 1000) -> list[bytes]:
    """Read and acknowledge everything readable, as the sender does."""
    out = []
    while (chunk := spool.read(batch, 1 << 20)) is not None:
        out += chunk.lines
        spool.ack(chunk)
    return out


# --- the spool ----------------------------------------------------------------------------------


def test_spool_records_appended_are_read_back_in_order_and_acknowledged_once(tmp_path):
    spool = Spool(tmp_path)
    for i in range(25):
        spool.append(line(i))
    assert spool.pending() == 25
    first = spool.read(10, 1 << 20)
    assert [orjson.loads(x)["request_id"] for x in first.lines] == [f"req-{i}" for i in range(10)]
    assert spool.read(10, 1 << 20).lines == first.lines  # not acknowledged: read again
    spool.ack(first)
    rest = drain(spool)
    assert [orjson.loads(x)["request_id"] for x in rest] == [f"req-{i}" for i in range(10, 25)]
    assert spool.pending() == 0
    spool.close()


def test_spool_reopened_resends_what_was_not_acknowledged(tmp_path):
    spool = Spool(tmp_path)
    for i in range(10):
        spool.append(line(i))
    spool.ack(spool.read(4, 1 << 20))
    spool.close()
    again = Spool(tmp_path)
    assert again.pending() == 6
    assert [orjson.loads(x)["request_id"] for x in drain(again)] == [f"req-{i}" for i in range(4, 10)]
    again.close()


def test_spool_cursor_lost_resends_everything_never_skips(tmp_path):
    spool = Spool(tmp_path)
    for i in range(5):
        spool.append(line(i))
    spool.ack(spool.read(3, 1 << 20))
    lane = spool.lane
    spool.close()
    (lane / "cursor").write_bytes(b"{garbage")
    again = Spool(tmp_path)
    assert len(drain(again)) == 5  # duplicates at the service, never a loss
    again.close()


def test_spool_torn_last_line_of_a_crashed_writer_is_skipped_and_the_rest_delivered(tmp_path):
    spool = Spool(tmp_path)
    for i in range(3):
        spool.append(line(i))
    lane = spool.lane
    segment = sorted(lane.glob("*.ndjson"))[-1]
    spool.close()
    with open(segment, "ab") as f:  # a crash mid-write: part of a line, no newline, never fsynced
        f.write(line(99)[:17])
    again = Spool(tmp_path)
    assert again.lane == lane
    again.append(line(3))
    assert [orjson.loads(x)["request_id"] for x in drain(again)] == ["req-0", "req-1", "req-2", "req-3"]
    again.close()


def test_spool_segments_rotate_and_acknowledged_ones_are_deleted(tmp_path, monkeypatch):
    monkeypatch.setattr(spool_module, "SEGMENT_BYTES", 1000)
    spool = Spool(tmp_path)
    for i in range(40):
        spool.append(line(i))
    assert len(list(spool.lane.glob("*.ndjson"))) > 5
    assert len(drain(spool, batch=7)) == 40
    assert len(list(spool.lane.glob("*.ndjson"))) <= 1
    spool.close()


def test_spool_concurrent_appends_share_fsyncs(tmp_path, monkeypatch):
    real = os.fdatasync

    def slow_disk(fd):  # a disk whose flush takes 0.3 s: appends arriving meanwhile wait for the next one
        time.sleep(0.3)
        real(fd)

    monkeypatch.setattr(spool_module.os, "fdatasync", slow_disk)
    spool = Spool(tmp_path)
    barrier = threading.Barrier(8)

    def sender(i):
        barrier.wait()
        spool.append(line(i))

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert spool.pending() == 8
    assert spool.fsyncs <= 4, spool.fsyncs  # one each would be 8
    assert len(drain(spool)) == 8
    spool.close()


def test_spool_append_returns_only_after_the_fsync(tmp_path, monkeypatch):
    synced = []
    real = os.fdatasync
    monkeypatch.setattr(spool_module.os, "fdatasync", lambda fd: (real(fd), synced.append(fd)))
    spool = Spool(tmp_path)
    spool.append(line(0))
    assert synced  # the record was flushed to disk before append returned
    spool.close()


def test_spool_two_live_clients_take_separate_lanes_and_a_restart_takes_the_free_one(tmp_path):
    a, b = Spool(tmp_path), Spool(tmp_path)
    assert a.lane != b.lane
    a.append(line(1))
    lane_a = a.lane
    a.close()  # a worker process ends with one record undelivered
    c = Spool(tmp_path)
    assert c.lane == lane_a and c.pending() == 1
    b.close()
    c.close()


def test_spool_orphan_lanes_are_drained_first_then_released(tmp_path):
    a, b = Spool(tmp_path), Spool(tmp_path)
    for i in range(3):
        a.append(line(i))
        b.append(line(10 + i))
    lane_b = b.lane
    a.close()
    b.close()
    c = Spool(tmp_path)  # takes lane-0 (a's) and adopts lane-1 (b's)
    assert c.pending() == 6
    mark = c.end()
    got = [orjson.loads(x)["request_id"] for x in drain(c)]
    assert sorted(got) == sorted([f"req-{i}" for i in (0, 1, 2, 10, 11, 12)])
    assert c.reached(mark)
    assert not list(lane_b.glob("*.ndjson"))  # released
    c.close()


def test_spool_rejected_records_are_kept_with_their_errors(tmp_path):
    spool = Spool(tmp_path)
    spool.set_aside([(line(1).rstrip(), "occurred_at: has no UTC offset", 422), (b"{not json", "line 1: bad", 400)])
    kept = spool.rejected()
    assert kept[0].record["request_id"] == "req-1" and "UTC offset" in kept[0].error and kept[0].status == 422
    assert kept[1].record == "{not json"
    spool.close()


def test_memory_buffer_is_bounded():
    buffer = MemoryBuffer(max_pending=3, max_rejected=10)
    for i in range(3):
        buffer.append(line(i))
    with pytest.raises(QueueFull, match="max_pending=3"):
        buffer.append(line(4))


# --- send refuses at once --------------------------------------------------------------------


def test_send_raises_at_once_on_a_record_that_is_not_json(tmp_path):
    with UsageClient(UNREACHABLE, INGEST, spool_dir=tmp_path) as client:
        with pytest.raises(TypeError):
            client.send(record(cost=Decimal("0.1")))
        with pytest.raises(TypeError):
            client.send(record(tags={1: "a"}))
        with pytest.raises(TypeError, match="mapping"):
            client.send([record()])
        assert client.pending() == 0
        client.close(timeout=0)


def test_send_without_spool_raises_queue_full_when_the_service_is_away():
    client = UsageClient(UNREACHABLE, INGEST, batch_size=10, max_pending=50, backoff_base=5)
    for i in range(50):
        client.send(record(f"q-{i}"))
    with pytest.raises(QueueFull):
        client.send(record("q-50"))
    assert len(client.unsent()) == 50
    assert client.flush(timeout=0.2) is False
    assert client.close(timeout=0) is False
    client.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        client.send(record("late"))


def test_client_rejects_bad_settings():
    with pytest.raises(ValueError, match="batch_size"):
        UsageClient(UNREACHABLE, INGEST, batch_size=20_000)
    with pytest.raises(ValueError, match="http"):
        UsageClient("metering:8000", INGEST)
    with pytest.raises(ValueError, match="flush_interval"):
        UsageClient(UNREACHABLE, INGEST, flush_interval=0)


# --- what each answer means ------------------------------------------------------------------


def answer(status: int, body: object = None, headers: dict | None = None) -> httpx.Response:
    content = orjson.dumps(body) if body is not None else b""
    return httpx.Response(status, content=content, headers=headers or {})


def test_classify_each_answer():
    assert classify(answer(200, {"accepted": 2, "duplicates": 1, "rejected": 0, "errors": []})).kind == "done"
    done = classify(answer(422, {"accepted": 1, "duplicates": 0, "rejected": 1,
                                 "errors": [{"index": 1, "request_id": "b", "error": "model: is required"}]}))
    assert done.kind == "done" and done.errors == {1: "model: is required"} and done.accepted == 1
    assert classify(answer(422, {"detail": "?"})).kind == "split"  # no per-record errors: find the culprit
    assert classify(answer(413, {"error": {"code": "payload_too_large", "message": "big"}})).kind == "split"
    assert classify(answer(400)).kind == "split"
    for status in (401, 403, 404, 405):
        assert classify(answer(status, {"error": {"code": "x", "message": "no"}})).kind == "fatal"
    limited = classify(answer(429, headers={"Retry-After": "7"}))
    assert limited.kind == "retry" and limited.delay == 7
    assert classify(answer(503, headers={"Retry-After": "2"})).delay == 2
    for status in (408, 500, 502, 504, 418):
        outcome = classify(answer(status))
        assert outcome.kind == "retry" and outcome.delay is None


def test_retry_after_reads_seconds_and_http_dates():
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    assert retry_after("120") == 120
    assert retry_after("Wed, 25 Nov 2026 12:00:30 GMT", now=now) == 30
    assert retry_after("Wed, 25 Nov 2026 11:00:00 GMT", now=now) == 0
    assert retry_after("soon") is None and retry_after(None) is None


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap():
    rng = random.Random(42)
    for attempt in range(12):
        ceiling = min(30.0, 0.25 * 2**attempt)
        for _ in range(20):
            assert ceiling / 2 <= backoff(attempt, base=0.25, cap=30.0, rng=rng) <= ceiling
    assert len({backoff(3, base=0.25, cap=30.0, rng=rng) for _ in range(10)}) > 1  # jitter


def test_spool_a_segment_that_cannot_be_created_fails_that_send_only(tmp_path, monkeypatch):
    monkeypatch.setattr(spool_module, "SEGMENT_BYTES", 200)
    spool = Spool(tmp_path)
    spool.append(line(0))
    real_open = os.open

    def full_disk(path, *args, **kwargs):
        if str(path).endswith(".ndjson"):
            raise OSError(28, "No space left on device")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(spool_module.os, "open", full_disk)
    with pytest.raises(OSError, match="No space"):
        spool.append(line(1))  # the segment is full and no new one can be made
    monkeypatch.setattr(spool_module.os, "open", real_open)
    spool.append(line(2))  # space is back
    assert [orjson.loads(x)["request_id"] for x in drain(spool)] == ["req-0", "req-2"]
    spool.close()


def test_spool_a_failed_write_leaves_no_torn_line(tmp_path, monkeypatch):
    spool = Spool(tmp_path)
    spool.append(line(0))
    real_write = os.write

    def half_written(fd, data):  # the disk fills in mid-line
        real_write(fd, data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(spool_module.os, "write", half_written)
    with pytest.raises(OSError, match="No space"):
        spool.append(line(1))
    monkeypatch.setattr(spool_module.os, "write", real_write)
    spool.append(line(2))
    assert [orjson.loads(x)["request_id"] for x in drain(spool)] == ["req-0", "req-2"]
    spool.close()
