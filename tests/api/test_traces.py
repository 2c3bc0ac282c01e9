"""POST /v1/traces over HTTP (the app in process): OTLP responses, duplicates and conflicts, and
bad bodies answered with our error shape. The official SDK's exporters against the real server are
in tests/e2e/test_otlp.py."""

from __future__ import annotations

import gzip
from datetime import timedelta

import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from metering.services.ingest import MAX_BODY_BYTES
from tests.conftest import ADMIN, INGEST, NOW, SECRET_A, auth
from tests.otlp_builders import request, span, usage

END = NOW - timedelta(hours=1)
PROTOBUF = {"Content-Type": "application/x-protobuf"}


def post(client, body: bytes, headers=PROTOBUF, token=INGEST):
    return client.post("/v1/traces", content=body, headers={**auth(token), **headers})


def answer(r) -> ExportTraceServiceResponse:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/x-protobuf"
    return ExportTraceServiceResponse.FromString(r.content)


def stored(store, request_id: str):
    with store.reading() as cur:
        return cur.execute("SELECT api_key_id, input_tokens, output_tokens, cost_pico FROM ledger WHERE request_id = ?",
                           [request_id]).fetchone()


def test_usage_spans_are_stored_and_priced_and_the_answer_is_an_empty_export_response(client, store):
    body = request(span(usage(**{"gen_ai.response.id": "resp-1"}), n=1, end=END),
                   span({"http.route": "/chat"}, n=2, end=END)).SerializeToString()
    r = post(client, body)
    assert r.content == b"" and not answer(r).HasField("partial_success")
    # 1000 input at $0.15/M + 300 output at $0.60/M = $0.00033 = 330,000,000 pico-dollars
    assert stored(store, "resp-1") == ("key-a", 1000, 300, 330_000_000)
    with store.reading() as cur:
        assert cur.execute("SELECT count(*) FROM ledger").fetchone()[0] == 1  # the span without usage is not


def test_the_same_spans_again_are_duplicates_and_a_changed_one_is_a_conflict(client, store):
    body = request(span(usage(**{"gen_ai.response.id": "resp-2"}), end=END)).SerializeToString()
    assert not answer(post(client, body)).HasField("partial_success")
    assert not answer(post(client, body)).HasField("partial_success")  # a re-export: stored once
    changed = request(span(usage(**{"gen_ai.response.id": "resp-2", "gen_ai.usage.output_tokens": 301}), n=7,
                           end=END)).SerializeToString()
    partial = answer(post(client, changed)).partial_success
    assert partial.rejected_spans == 1
    assert "span 0000000000000007" in partial.error_message and "conflict" in partial.error_message
    assert stored(store, "resp-2")[2] == 300


def test_span_rejections_and_record_rejections_are_counted_together_and_the_rest_stored(client, store):
    body = request(
        span(usage(**{"gen_ai.response.id": "ok"}), n=1, end=END),
        span(usage(**{"gen_ai.response.id": "no-key"}), n=2, end=END),
        span(usage(**{"gen_ai.response.id": "too-cached", "gen_ai.usage.cache_read.input_tokens": 5000}), n=3, end=END),
        span(usage(**{"gen_ai.response.id": "future"}), n=4, end=NOW + timedelta(hours=1)),
        resource={"service.name": "svc"},
    )
    for s, key in zip(body.resource_spans[0].scope_spans[0].spans, ("key-a", None, "key-a", "key-a"), strict=True):
        if key:
            s.attributes.add(key="metering.api_key_id").value.string_value = key
    partial = answer(post(client, body.SerializeToString())).partial_success
    assert partial.rejected_spans == 3
    text = partial.error_message
    assert text.startswith("3 of 4 spans rejected:")
    assert "span 0000000000000002" in text and "no metering.api_key_id" in text
    assert "span 0000000000000003" in text and "(from gen_ai.usage.cache_read.input_tokens)" in text
    assert "span 0000000000000004" in text and "future" in text and "(from end_time_unix_nano)" in text
    assert stored(store, "ok") is not None
    assert all(stored(store, rid) is None for rid in ("no-key", "too-cached", "future"))


def test_json_requests_get_json_answers(client, store):
    body = orjson.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "chat",
        "endTimeUnixNano": str(int(END.timestamp()) * 10**9),
        "attributes": [{"key": "gen_ai.usage.input_tokens", "value": {"intValue": "10"}},
                       {"key": "gen_ai.usage.output_tokens", "value": {"intValue": "2"}},
                       {"key": "gen_ai.request.model", "value": {"stringValue": "minimax-m2-7"}}]}]}]}]})
    r = post(client, body, {"Content-Type": "application/json"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.json() == {"partialSuccess": {"rejectedSpans": "1", "errorMessage": (
        "1 of 1 spans rejected: span eee19b7ec3c1b174 of trace 5b8efff798038103d269b633813fc60c ('chat'): "
        "no metering.api_key_id attribute on the span or its resource: the service cannot tell whose usage it is")}}
    r = post(client, gzip.compress(body), {"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert r.status_code == 200 and r.json()["partialSuccess"]["rejectedSpans"] == "1"


def test_bad_bodies_are_answered_with_our_error_shape(client):
    cases = [
        (b"\xff\xff\xff", PROTOBUF, 400, "bad_request", "protobuf"),
        (b"{", {"Content-Type": "application/json"}, 400, "bad_request", "not valid JSON"),
        (b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"W47/95gDgQPSabYzgT/GDA=="}]}]}]}',
         {"Content-Type": "application/json"}, 400, "bad_request", "hex"),
        (b"{}", {"Content-Type": "text/plain"}, 415, "unsupported_media_type", "application/x-protobuf"),
        (b"", {}, 415, "unsupported_media_type", "(none)"),
        (b"\x0a\x00", {**PROTOBUF, "Content-Encoding": "br"}, 415, "unsupported_media_type", "gzip"),
        (b"\x0a\x00", {**PROTOBUF, "Content-Encoding": "gzip"}, 400, "bad_request", "gzip"),
        (gzip.compress(b"\x00" * (MAX_BODY_BYTES + 1)), {**PROTOBUF, "Content-Encoding": "gzip"}, 413,
         "payload_too_large", "decompresses"),
    ]
    for body, headers, status, code, words in cases:
        r = post(client, body, headers)
        assert r.status_code == status, (headers, r.text)
        assert r.json()["error"]["code"] == code and words in r.json()["error"]["message"], r.text


def test_a_body_over_10_mib_is_refused_before_it_is_read(client):
    r = post(client, b"\x00" * (MAX_BODY_BYTES + 1))
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


def test_a_key_may_not_export_traces(client, two_keys):
    r = post(client, request().SerializeToString(), token=SECRET_A)
    assert r.status_code == 403
    assert post(client, request().SerializeToString(), token=ADMIN).status_code == 200
