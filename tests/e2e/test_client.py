"""metering.client.UsageClient against the real server (`metering serve` in a subprocess): the
service down and back, a gateway SIGKILLed after `send` returned or between a POST and its
bookkeeping, a server restart mid-stream, 429/503 Retry-After and 413 from a real HTTP proxy in
front of the service, rejected records set aside, a refused token, flush and close. In every
case the ledger ends with each record exactly once."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import orjson
import pytest

from metering.client import ClientError, UsageClient
from tests.conftest import ADMIN, INGEST, Server, auth, free_port, generate_records, record

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).parents[2]
FAST = {"flush_interval": 0.05, "backoff_base": 0.05, "backoff_cap": 0.5}  # retries within a second


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One server for the tests that do not stop or start it; each test writes under its own key."""
    server = Server(tmp_path_factory.mktemp("client") / "shared.duckdb").start()
    yield server
    server.kill()


@pytest.fixture
def key() -> str:
    return f"key-{uuid.uuid4().hex[:12]}"


def keyed(records: list[dict], key: str) -> list[dict]:
    return [{**r, "api_key_id": key} for r in records]


def ledger(url: str, key: str | None = None) -> tuple[int, int]:
    """(records stored, their input tokens) over every bucket the tests write (of one key if given)."""
    params = {"start": "2026-01-01", "end": "2027-01-01", "bucket": "month", **({"api_key_id": key} if key else {})}
    r = httpx.get(f"{url}/v1/usage", params=params, headers=auth(ADMIN), timeout=30)
    assert r.status_code == 200, r.text
    totals = r.json()["totals"]
    return totals["requests"], totals["input_tokens"]


def expected(records: list[dict]) -> tuple[int, int]:
    return len(records), sum(r["input_tokens"] for r in records)


def gateway(url: str, spool: Path, records: list[dict], *extra: str) -> subprocess.Popen:
    """tests/e2e/gateway_process.py sending `records` through a client on `spool`."""
    path = spool.parent / "gateway-records.ndjson"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return subprocess.Popen([sys.executable, "-m", "tests.e2e.gateway_process", url, str(spool), str(path), INGEST,
                             *extra], cwd=ROOT, stdout=subprocess.PIPE, text=True)


def wait_for(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


class Proxy:
    """A real HTTP server in front of the service (as nginx or a load balancer would be): `policy`
    sees each POST's body and may answer it itself (status, headers, body); otherwise it forwards."""

    def __init__(self, upstream: str, policy) -> None:
        self.upstream, self.policy = upstream, policy
        self.seen: list[tuple[float, int, int]] = []  # (monotonic time, records in the body, status answered)
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                records = body.count(b"\n")
                answer = proxy.policy(len(proxy.seen), body)
                if answer is None:
                    r = httpx.post(proxy.upstream + self.path, content=body, timeout=30, headers={
                        "Authorization": self.headers["Authorization"], "Content-Type": self.headers["Content-Type"]})
                    answer = (r.status_code, {}, r.content)
                status, headers, content = answer
                proxy.seen.append((time.monotonic(), records, status))
                self.send_response(status)
                for name, value in {**headers, "Content-Type": "application/json",
                                    "Content-Length": str(len(content))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(content)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("spooled", [True, False], ids=["spool", "memory"])
def test_service_down_while_sending_then_up_every_record_stored_once(server_factory, tmp_path, spooled):
    server = server_factory(port=free_port())  # not started yet: connections are refused
    records = generate_records(400, prefix="down")
    client = UsageClient(server.url, INGEST, spool_dir=tmp_path / "spool" if spooled else None, batch_size=100, **FAST)
    for r in records:
        client.send(r)
    assert client.flush(timeout=0.3) is False
    assert wait_for(lambda: client.stats()["retries"] >= 2)
    server.start()
    assert client.flush(timeout=60) is True
    assert client.close() is True
    assert ledger(server.url) == expected(records)
    stats = client.stats()
    assert stats["accepted"] + stats["duplicates"] == 400 and stats["pending"] == 0


def test_gateway_sigkilled_right_after_send_returned_new_client_sends_the_rest(shared, key, tmp_path):
    server = shared
    spool = tmp_path / "spool"
    records = keyed(generate_records(300, seed=7, prefix=key), key)
    with gateway(server.url, spool, records) as proc:
        for text in proc.stdout:
            if text.strip() == "sent":
                break
        proc.kill()  # SIGKILL: no atexit, no flush; some batches were delivered, some not
    delivered_before, _ = ledger(server.url, key)
    with UsageClient(server.url, INGEST, spool_dir=spool) as client:
        assert client.pending() >= 300 - delivered_before  # what was not delivered is on disk
        assert client.flush(timeout=60) is True
    assert ledger(server.url, key) == expected(records)


def test_gateway_killed_between_a_post_and_its_bookkeeping_resends_as_duplicates(shared, key, tmp_path):
    server = shared
    spool = tmp_path / "spool"
    records = keyed(generate_records(300, seed=7, prefix=key), key)
    with gateway(server.url, spool, records, "--die-after-post") as proc:
        returned = sum(1 for text in proc.stdout if text.strip().isdigit())  # until it dies
        assert proc.wait(timeout=60) == -9
    durable = sum(p.read_bytes().count(b"\n") for p in spool.glob("lane-*/*.ndjson"))
    assert durable >= returned  # every send that returned is on disk (one more may have been written)
    stored_before, _ = ledger(server.url, key)
    assert stored_before > 0  # the first batch reached the ledger before the process died
    with UsageClient(server.url, INGEST, spool_dir=spool) as client:
        assert client.flush(timeout=60) is True
        stats = client.stats()
    assert stats["duplicates"] == stored_before  # the acknowledged batch was sent again, not stored again
    assert ledger(server.url, key) == expected(records[:durable])


def test_server_killed_and_restarted_mid_stream_every_record_stored_once(server_factory, tmp_path):
    port = free_port()
    db = tmp_path / "restart.duckdb"
    server = server_factory(db=db, port=port).start()
    records = generate_records(1200, prefix="restart")
    client = UsageClient(server.url, INGEST, spool_dir=tmp_path / "spool", batch_size=50, **FAST)
    sent = threading.Event()

    def gateway():
        for i, r in enumerate(records):
            client.send(r)
            if i == 400:
                sent.set()

    thread = threading.Thread(target=gateway)
    thread.start()
    assert sent.wait(30)
    server.kill()  # kill -9 mid-stream: some batches in flight get no answer
    server_factory(db=db, port=port).start()
    thread.join()
    assert client.flush(timeout=60) is True
    client.close()
    assert ledger(server.url) == expected(records)


def test_429_and_503_retry_after_are_honoured(shared, key, tmp_path):
    server = shared

    def policy(n, body):
        if n == 0:
            return 429, {"Retry-After": "1"}, b'{"error": {"code": "rate_limited", "message": "slow down"}}'
        if n == 1:
            return 503, {"Retry-After": "1"}, b'{"error": {"code": "database_locked", "message": "busy"}}'
        return None

    proxy = Proxy(server.url, policy)
    try:
        records = keyed(generate_records(30, prefix=key), key)
        with UsageClient(proxy.url, INGEST, spool_dir=tmp_path / "spool", backoff_base=0.01, backoff_cap=0.02) as client:
            for r in records:
                client.send(r)
            assert client.flush(timeout=30) is True
            assert client.stats()["retries"] == 2
        times = [t for t, _, _ in proxy.seen]
        assert [status for _, _, status in proxy.seen] == [429, 503, 200]
        # without Retry-After the client would have come back within 0.02 s
        assert times[1] - times[0] >= 1.0 and times[2] - times[1] >= 1.0
    finally:
        proxy.close()
    assert ledger(server.url, key) == expected(records)


def test_413_from_a_proxy_splits_the_batch_and_sets_aside_a_record_too_large_alone(shared, key, tmp_path):
    server = shared

    def policy(n, body):  # a proxy with a small body limit, like nginx's client_max_body_size
        if body.count(b"\n") > 25 or b"huge" in body:
            return 413, {}, b'{"error": {"code": "payload_too_large", "message": "body too large"}}'
        return None

    proxy = Proxy(server.url, policy)
    try:
        records = keyed(generate_records(100, prefix=key), key)
        with UsageClient(proxy.url, INGEST, batch_size=100, flush_interval=30) as client:
            for r in records[:50]:
                client.send(r)
            client.send(record(f"huge-{key}", api_key_id=key, tags={"note": "x" * 200}))
            for r in records[50:]:
                client.send(r)
            assert client.flush(timeout=30) is True
            rejected = client.rejected()
        assert [(r.record["request_id"], r.status) for r in rejected] == [(f"huge-{key}", 413)]
        assert "body too large" in rejected[0].error
        assert max(n for _, n, status in proxy.seen if status == 200) <= 25
    finally:
        proxy.close()
    assert ledger(server.url, key) == expected(records)


def test_rejected_records_are_set_aside_with_their_errors_and_the_valid_ones_stored(shared, key, tmp_path):
    server = shared
    valid = keyed(generate_records(20, prefix=key), key)
    bad = [
        record(f"naive-{key}", api_key_id=key, occurred_at="2026-11-25T10:00:00"),
        record(f"cache-{key}", api_key_id=key, input_tokens=10, cached_tokens=50),
        {**valid[0], "input_tokens": valid[0]["input_tokens"] + 1},  # same request_id, other content
    ]
    spool = tmp_path / "spool"
    with UsageClient(server.url, INGEST, spool_dir=spool, batch_size=100, flush_interval=30) as client:
        client.send(valid[0])
        assert client.flush(timeout=30)
        for r in [*valid[1:10], bad[0], *valid[10:15], bad[1], bad[2], *valid[15:]]:
            client.send(r)
        assert client.flush(timeout=30) is True
        posts = client.stats()["posts"]
        assert client.flush(timeout=5) is True and client.stats()["posts"] == posts  # never retried
    assert ledger(server.url, key) == expected(valid)
    lines = [orjson.loads(x) for x in (spool / "rejected.ndjson").read_bytes().splitlines()]
    assert [x["record"]["request_id"] for x in lines] == [f"naive-{key}", f"cache-{key}", valid[0]["request_id"]]
    assert "offset" in lines[0]["error"] and "exceed" in lines[1]["error"] and "conflict" in lines[2]["error"]
    assert all(x["status"] == 422 for x in lines)

    with UsageClient(server.url, INGEST, batch_size=100, flush_interval=30) as memory:  # no spool: kept in memory
        memory.send(record(f"naive-2-{key}", api_key_id=key, occurred_at="2026-11-25T10:00:00"))
        memory.send(record(f"ok-{key}", api_key_id=key))
        assert memory.flush(timeout=30) is True
        assert [(r.record["request_id"], "offset" in r.error) for r in memory.rejected()] == [(f"naive-2-{key}", True)]
    assert ledger(server.url, key)[0] == 21


def test_a_refused_token_stops_sending_keeps_the_records_and_the_right_token_delivers_them(shared, key, tmp_path):
    server = shared
    spool = tmp_path / "spool"
    records = keyed(generate_records(50, prefix=key), key)
    client = UsageClient(server.url, "not-the-ingest-token-0123456789", spool_dir=spool, **FAST)
    for r in records:
        client.send(r)
    assert client.flush(timeout=30) is False
    assert isinstance(client.error, ClientError) and "401" in str(client.error)
    assert client.pending() == 50
    assert client.close(timeout=1) is False
    assert ledger(server.url, key) == (0, 0)

    with UsageClient(server.url, INGEST, spool_dir=spool) as fixed:
        assert fixed.flush(timeout=30) is True
    assert ledger(server.url, key) == expected(records)

    memory = UsageClient(server.url, ADMIN + "-wrong", **FAST)
    memory.send(record("kept-in-memory"))
    assert memory.flush(timeout=30) is False and memory.error is not None
    assert [r["request_id"] for r in memory.unsent()] == ["kept-in-memory"]
    memory.close(timeout=0)


def test_flush_close_and_batching_triggers(shared, key, tmp_path):
    server = shared
    # A full batch goes at once, whatever the interval.
    client = UsageClient(server.url, INGEST, spool_dir=tmp_path / "a", batch_size=10, flush_interval=600)
    for r in keyed(generate_records(10, prefix=f"full-{key}"), key):
        client.send(r)
    assert wait_for(lambda: ledger(server.url, key)[0] == 10)
    # A partial batch goes after flush_interval, without a flush.
    slow = UsageClient(server.url, INGEST, batch_size=1000, flush_interval=0.2)
    for r in keyed(generate_records(5, prefix=f"interval-{key}"), key):
        slow.send(r)
    assert wait_for(lambda: ledger(server.url, key)[0] == 15)
    assert slow.flush() is True  # nothing outstanding: at once
    assert slow.close() is True and slow.close() is True  # idempotent
    with pytest.raises(ValueError, match="closed"):
        slow.send(record("late"))
    client.close()
    # The context manager flushes on exit.
    with UsageClient(server.url, INGEST, spool_dir=tmp_path / "b", batch_size=1000, flush_interval=600) as ctx:
        for r in keyed(generate_records(7, prefix=f"ctx-{key}"), key):
            ctx.send(r)
    assert ledger(server.url, key)[0] == 22


def test_concurrent_senders_on_a_spool_every_record_stored_once(shared, key, tmp_path):
    server = shared
    records = keyed(generate_records(800, prefix=key), key)
    with UsageClient(server.url, INGEST, spool_dir=tmp_path / "spool", batch_size=200) as client:
        threads = [threading.Thread(target=lambda part: [client.send(r) for r in part], args=(records[i::8],))
                   for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert client.flush(timeout=60) is True
        assert client.stats()["sent"] == 800
    assert ledger(server.url, key) == expected(records)
