"""GET /metrics against the real server: the counters move by exactly what was sent through both ingest
routes, latency is labelled by route template, webhook attempts and budget evaluations are counted,
the writer's gauges are there; and who may read it."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ADMIN, INGEST, METRICS, auth, record
from tests.e2e.test_alerts import Receiver
from tests.otlp_builders import request, span, usage

pytestmark = pytest.mark.e2e


def scrape(server, token: str = METRICS) -> dict[tuple[str, tuple], float]:
    """Every sample as {(name, sorted labels): value}, parsed by prometheus_client's own parser."""
    r = httpx.get(f"{server.url}/metrics", headers=auth(token), timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def ingested(samples: dict, outcome: str) -> float:
    return samples[("metering_ingest_records_total", (("outcome", outcome),))]


def sample(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def server(server_factory, tmp_path):
    return server_factory(tmp_path / "metrics.duckdb", extra_env={
        "METERING_METRICS_TOKEN": METRICS, "METERING_WEBHOOK_RETRY_SCHEDULE": "0.1,0.1"}).start()


def test_ingest_counters_move_by_exactly_the_records_sent_through_both_routes(server):
    before = scrape(server)
    at = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    sent = {"accepted": 0, "duplicate": 0, "rejected": 0}
    usage_posts = 0

    def post_usage(*, headers=None, **body):
        nonlocal usage_posts
        usage_posts += 1
        return httpx.post(f"{server.url}/v1/usage", headers={**auth(INGEST), **(headers or {})}, timeout=30,
                          **body).json()

    # one record; a 40-record batch (the column path) with 3 bad records; 10 of it again; NDJSON with a bad line
    assert post_usage(json=record("m-1", occurred_at=at))["accepted"] == 1
    sent["accepted"] += 1
    batch = [record(f"m-b{i}", occurred_at=at, api_key_id=f"k{i % 4}") for i in range(40)]
    for i in (3, 17, 30):
        batch[i]["input_tokens"] = -1
    assert post_usage(json=batch) | {"errors": None} == {"accepted": 37, "duplicates": 0, "rejected": 3,
                                                              "errors": None}
    sent["accepted"] += 37
    sent["rejected"] += 3
    assert post_usage(json=batch[:10])["duplicates"] == 9  # 9 stored ones again, and the bad one again
    sent["duplicate"] += 9
    sent["rejected"] += 1
    lines = orjson.dumps(record("m-nd1", occurred_at=at)) + b"\n{not json\n" + orjson.dumps(record("m-1", occurred_at=at))
    answer = post_usage(content=lines, headers={"Content-Type": "application/x-ndjson"})
    assert (answer["accepted"], answer["duplicates"], answer["rejected"]) == (1, 1, 1)
    sent = {"accepted": sent["accepted"] + 1, "duplicate": sent["duplicate"] + 1, "rejected": sent["rejected"] + 1}

    # OTLP: one good span, then the same export again (a duplicate), then a body with 3 bad spans of 4
    end = datetime.now(UTC) - timedelta(minutes=1)
    good = request(span(usage(**{"gen_ai.response.id": "otlp-1"}), n=1, end=end)).SerializeToString()
    mixed = request(
        span(usage(**{"gen_ai.response.id": "otlp-2"}), n=1, end=end),
        span(usage(**{"gen_ai.response.id": "otlp-no-key"}), n=2, end=end),
        span(usage(**{"gen_ai.response.id": "otlp-cached", "gen_ai.usage.cache_read.input_tokens": 5000}), n=3,
             end=end),
        span(usage(**{"gen_ai.response.id": "otlp-future"}), n=4, end=datetime.now(UTC) + timedelta(hours=1)),
        resource={"service.name": "svc"},
    )
    for s, key in zip(mixed.resource_spans[0].scope_spans[0].spans, ("key-a", None, "key-a", "key-a"), strict=True):
        if key:
            s.attributes.add(key="metering.api_key_id").value.string_value = key
    protobuf = {**auth(INGEST), "Content-Type": "application/x-protobuf"}
    for body in (good, good, mixed.SerializeToString()):
        assert httpx.post(f"{server.url}/v1/traces", content=body, headers=protobuf, timeout=30).status_code == 200
    sent = {"accepted": sent["accepted"] + 2, "duplicate": sent["duplicate"] + 1, "rejected": sent["rejected"] + 3}

    after = scrape(server)
    for outcome, n in sent.items():
        assert ingested(after, outcome) - ingested(before, outcome) == n, outcome
    count = "metering_http_request_duration_seconds_count"
    assert sample(after, count, method="POST", route="/v1/usage") - sample(before, count, method="POST",
                                                                          route="/v1/usage") == usage_posts
    assert sample(after, count, method="POST", route="/v1/traces") == 3
    assert sample(after, "metering_http_responses_total", method="POST", route="/v1/usage", status="422") == 3
    assert sample(after, "metering_http_responses_total", method="POST", route="/v1/usage", status="200") == 1
    # the writer's figures: every committed group is in the histogram, and the lag gauges are there
    # one request at a time: each of the 7 bodies with valid records is a group of its own, and the sizes add
    # up to the records handed to the writer (1 + 37 + 9 + 2 by POST /v1/usage, 1 + 1 + 1 by POST /v1/traces)
    assert sample(after, "metering_writer_group_commit_records_count") == 7
    assert sample(after, "metering_writer_group_commit_records_sum") == 52
    assert sample(after, "metering_writer_group_commit_requests_sum") == 7
    assert ("metering_rollup_lag_records", ()) in after and ("metering_rollup_lag_seconds", ()) in after
    assert ("metering_writer_queue_depth", ()) in after


def test_latency_is_labelled_by_route_template_never_by_the_raw_path(server):
    budget = httpx.post(f"{server.url}/v1/budgets", json={"scope": {"all": True}, "amount": "5"}, headers=auth(ADMIN),
                        timeout=30).json()
    for _ in range(3):
        assert httpx.get(f"{server.url}/v1/budgets/{budget['id']}", headers=auth(ADMIN), timeout=30).status_code == 200
    assert httpx.get(f"{server.url}/no/such/path/123", timeout=30).status_code == 404
    assert httpx.get(f"{server.url}/dashboard/", timeout=30).status_code == 200
    text = httpx.get(f"{server.url}/metrics", headers=auth(ADMIN), timeout=30).text
    samples = scrape(server)
    count = "metering_http_request_duration_seconds_count"
    assert sample(samples, count, method="GET", route="/v1/budgets/{budget_id}") == 3
    assert sample(samples, count, method="GET", route="unmatched") == 1
    assert sample(samples, count, method="GET", route="/dashboard") == 1
    assert budget["id"] not in text and "/no/such" not in text
    # a histogram: buckets up to +Inf, which counts every request
    assert sample(samples, "metering_http_request_duration_seconds_bucket", method="GET",
                  route="/v1/budgets/{budget_id}", le="+Inf") == 3


def test_webhook_deliveries_and_budget_evaluations_are_counted_by_outcome(server):
    receiver = Receiver([500, 200])
    try:
        r = httpx.post(f"{server.url}/v1/budgets", headers=auth(ADMIN), timeout=30, json={
            "scope": {"api_key_id": "key-a"}, "amount": "0.0004", "thresholds": [0.5], "webhook_url": receiver.url})
        assert r.status_code == 201, r.text
        before = scrape(server)
        at = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
        httpx.post(f"{server.url}/v1/usage", json=record("spend-1", occurred_at=at), headers=auth(INGEST), timeout=30)
        assert httpx.post(f"{server.url}/v1/budgets/check", headers=auth(ADMIN), timeout=30).status_code == 200
        assert len(receiver.wait_for(2)) == 2  # a 500, then the retry's 200
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # the attempt is counted once it is recorded, just after the answer
            after = scrape(server)
            if sample(after, "metering_webhook_deliveries_total", outcome="delivered") == 1:
                break
            time.sleep(0.05)
        assert sample(after, "metering_webhook_deliveries_total", outcome="failed") == 1
        assert sample(after, "metering_webhook_deliveries_total", outcome="delivered") == 1
        assert sample(after, "metering_webhook_deliveries_total", outcome="gone") == 0
        evaluations = "metering_budget_evaluations_total"
        assert sample(after, evaluations, outcome="ok") - sample(before, evaluations, outcome="ok") >= 1
        assert sample(after, evaluations, outcome="failed") == 0
        assert sample(after, "metering_alerts_written_total") == 1
    finally:
        receiver.close()


def test_who_may_read_the_metrics(server, tmp_path):
    key = httpx.post(f"{server.url}/v1/keys", json={"api_key_id": "key-m", "account_id": "a"}, headers=auth(ADMIN),
                     timeout=30).json()["secret"]
    get = lambda path, token: httpx.get(f"{server.url}{path}", headers=auth(token) if token else {}, timeout=30)  # noqa: E731
    assert get("/metrics", METRICS).status_code == 200
    assert get("/metrics", ADMIN).status_code == 200
    assert get("/metrics", key).status_code == 403
    assert get("/metrics", INGEST).status_code == 403
    assert get("/metrics", None).status_code == 401
    for path in ("/v1/usage", "/v1/keys", "/v1/rates", "/v1/me"):
        assert get(path, METRICS).status_code == 403, path
    r = httpx.post(f"{server.url}/v1/usage", json=record("by-metrics"), headers=auth(METRICS), timeout=30)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    openmetrics = httpx.get(f"{server.url}/metrics", timeout=30,
                            headers={**auth(METRICS), "Accept": "application/openmetrics-text; version=1.0.0"})
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.text.rstrip().endswith("# EOF")
