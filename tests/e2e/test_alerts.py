"""Budget alerts end to end: the real server in a subprocess, a real webhook receiver on
127.0.0.1, signatures checked with the independent `standardwebhooks` package."""

from __future__ import annotations

import itertools
import json
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from tests.conftest import ADMIN, INGEST, auth, free_port, record

pytestmark = pytest.mark.e2e
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the Standard Webhooks example secret
DOLLAR_RECORD = {"input_tokens": 1_000_000, "cached_tokens": 0, "output_tokens": 0, "thinking_tokens": None}


class Receiver:
    """A webhook endpoint that records every delivery and answers from a script of statuses."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [200])
        self.received: list[dict] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                with receiver.lock:
                    receiver.received.append({"at": time.monotonic(), "headers": dict(self.headers.items()),
                                              "body": body})
                    status = receiver.statuses.pop(0) if len(receiver.statuses) > 1 else receiver.statuses[0]
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # By name: the sender resolves it, checks every address, and connects to a checked one.
        self.url = f"http://localhost:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, n: int, timeout: float = 15) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.received) >= n:
                    return list(self.received)
            time.sleep(0.02)
        return list(self.received)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver_factory():
    made: list[Receiver] = []

    def make(statuses=None) -> Receiver:
        made.append(Receiver(statuses))
        return made[-1]

    yield make
    for r in made:
        r.close()


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def post_spend(server, start: int, n: int) -> float:
    """n records of 0.15 USD each on key-a; returns when the response (the commit) came back."""
    records = [record(f"spend-{i}", api_key_id="key-a", occurred_at=now_iso(), **DOLLAR_RECORD)
               for i in range(start, start + n)]
    r = httpx.post(f"{server.url}/v1/usage", json=records, headers=auth(INGEST), timeout=30)
    assert r.status_code == 200, r.text
    return time.monotonic()


def make_budget(server, url: str, **fields) -> dict:
    body = {"scope": {"api_key_id": "key-a"}, "period": "month", "amount": "1.00", "webhook_url": url,
            "webhook_secret": SECRET, **fields}
    r = httpx.post(f"{server.url}/v1/budgets", json=body, headers=auth(ADMIN), timeout=30)
    assert r.status_code == 201, r.text
    return r.json()


def verify(delivery: dict) -> dict:
    """Check the signature with the independent implementation; return the payload."""
    headers = {k.lower(): v for k, v in delivery["headers"].items()}
    return Webhook(SECRET).verify(delivery["body"], headers)


def alerts(server) -> list[dict]:
    return httpx.get(f"{server.url}/v1/alerts", headers=auth(ADMIN), timeout=30).json()["data"]


def test_three_thresholds_three_signed_deliveries_in_order_then_silence(server_factory, receiver_factory, tmp_path):
    server = server_factory(tmp_path / "a.duckdb").start()
    receiver = receiver_factory()
    make_budget(server, receiver.url)
    latencies = []
    sent = 0
    for n, expected in ((1, 0), (3, 1), (2, 2), (1, 3)):  # cumulative 0.15, 0.60, 0.90, 1.05 USD
        committed = post_spend(server, sent, n)
        sent += n
        got = receiver.wait_for(expected, timeout=15 if expected else 1)
        assert len(got) == expected
        if expected:
            latencies.append(got[-1]["at"] - committed)
    post_spend(server, 7, 20)  # far above 100%
    httpx.post(f"{server.url}/v1/budgets/check", headers=auth(ADMIN), timeout=30)
    time.sleep(1.5)
    deliveries = receiver.wait_for(4, timeout=0.5)
    assert len(deliveries) == 3
    payloads = [verify(d) for d in deliveries]
    assert [p["data"]["threshold"] for p in payloads] == ["0.5", "0.8", "1.0"]
    assert {p["type"] for p in payloads} == {"budget.threshold_crossed"}
    assert len({d["headers"]["webhook-id"] for d in deliveries}) == 3
    assert all(a["status"] == "delivered" and a["attempts"] == 1 for a in alerts(server))
    # Sent to the address the name resolved to, with the name as Host.
    assert {v for d in deliveries for k, v in d["headers"].items() if k.lower() == "host"} == {receiver.url.split("/")[2]}
    print(f"\ncommit-to-webhook latency: {', '.join(f'{x * 1000:.0f} ms' for x in latencies)}")  # a figure, not a test


def test_sigkill_right_after_a_crossing_delivers_the_alert_once(server_factory, receiver_factory, tmp_path):
    db = tmp_path / "k.duckdb"
    server = server_factory(db).start()
    receiver = receiver_factory()
    make_budget(server, receiver.url, thresholds=[0.5])
    post_spend(server, 0, 4)  # 0.60: crosses 50%
    server.kill()  # before, during or after the evaluation and the delivery
    server.start()
    httpx.post(f"{server.url}/v1/budgets/check", headers=auth(ADMIN), timeout=30)
    deliveries = receiver.wait_for(1)
    assert deliveries, "the alert was never delivered"
    time.sleep(1.0)
    post_spend(server, 4, 2)
    httpx.post(f"{server.url}/v1/budgets/check", headers=auth(ADMIN), timeout=30)
    time.sleep(1.0)
    deliveries = receiver.wait_for(99, timeout=0.1)
    assert len({d["headers"]["webhook-id"] for d in deliveries}) == 1  # one alert, however often sent
    assert [a["status"] for a in alerts(server)] == ["delivered"]


def test_500_twice_then_200_gives_three_attempts_with_growing_gaps(server_factory, receiver_factory, tmp_path):
    server = server_factory(tmp_path / "r.duckdb",
                            extra_env={"METERING_WEBHOOK_RETRY_SCHEDULE": "0.3,1.2,5"}).start()
    receiver = receiver_factory([500, 500, 200])
    make_budget(server, receiver.url, thresholds=[0.5])
    post_spend(server, 0, 4)
    deliveries = receiver.wait_for(3)
    assert len(deliveries) == 3
    assert len({d["headers"]["webhook-id"] for d in deliveries}) == 1
    gaps = [b["at"] - a["at"] for a, b in itertools.pairwise(deliveries)]
    assert gaps[0] < gaps[1]
    time.sleep(0.5)
    (alert,) = alerts(server)
    assert alert["status"] == "delivered" and alert["attempts"] == 3
    assert [a["status_code"] for a in alert["delivery_attempts"]] == [500, 500, 200]


def test_a_receiver_that_is_down_gets_the_full_schedule_and_a_failed_status(server_factory, tmp_path):
    server = server_factory(tmp_path / "d.duckdb", extra_env={"METERING_WEBHOOK_RETRY_SCHEDULE": "0.1,0.2,0.3"}).start()
    make_budget(server, f"http://127.0.0.1:{free_port()}/nobody-home", thresholds=[0.5])
    post_spend(server, 0, 4)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        (alert,) = alerts(server) or [{"status": "pending"}]
        if alert["status"] == "failed":
            break
        time.sleep(0.1)
    assert alert["status"] == "failed" and alert["attempts"] == 4  # the first try and three retries
    assert all(a["status_code"] is None and a["error"] for a in alert["delivery_attempts"])


def test_410_gone_disables_the_endpoint(server_factory, receiver_factory, tmp_path):
    server = server_factory(tmp_path / "g.duckdb").start()
    receiver = receiver_factory([410])
    budget = make_budget(server, receiver.url, thresholds=[0.5, 0.8])
    post_spend(server, 0, 4)
    assert len(receiver.wait_for(1)) == 1
    post_spend(server, 4, 2)
    httpx.post(f"{server.url}/v1/budgets/check", headers=auth(ADMIN), timeout=30)
    time.sleep(1.5)
    assert len(receiver.wait_for(2, timeout=0.2)) == 1
    assert [a["status"] for a in alerts(server)] == ["disabled", "disabled"]
    got = httpx.get(f"{server.url}/v1/budgets/{budget['id']}", headers=auth(ADMIN), timeout=30).json()
    assert got["webhook_disabled"] is True
    assert json.loads(receiver.received[0]["body"])["data"]["threshold"] == "0.5"
