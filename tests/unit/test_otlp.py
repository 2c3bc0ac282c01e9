"""metering.otlp: OTLP trace requests -> canonical usage records, and OTLP's response. Pure, so
tested as result against expected, with spans built from the official protobuf classes."""

from __future__ import annotations

import gzip
import zlib
from datetime import UTC, datetime

import orjson
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from metering import otlp
from metering.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from metering.services.ingest import parse_items
from tests.conftest import NOW
from tests.otlp_builders import TRACE, nanos, request, span, usage

END = datetime(2026, 11, 25, 10, 0, 0, 123456, tzinfo=UTC)
END_NS = nanos(END) + 789  # nanoseconds below a microsecond are dropped


def records(*spans, resource=None) -> otlp.Converted:
    return otlp.spans_to_records(request(*spans, resource=resource))


def only(*spans, **kwargs) -> dict:
    converted = records(*spans, **kwargs)
    assert converted.rejected == []
    assert len(converted.records) == 1
    return converted.records[0]


def reason(*spans, **kwargs) -> str:
    converted = records(*spans, **kwargs)
    assert converted.records == [] and len(converted.rejected) == 1
    return converted.rejected[0][1]


# --- the mapping of the contract -----------------------------------------------------------------


def test_a_chat_span_becomes_the_canonical_record_the_contract_describes():
    rec = only(span(usage(**{"gen_ai.response.id": "chatcmpl-123", "gen_ai.response.model": "minimax-m2-7-0613",
                             "gen_ai.usage.input_tokens": 2006, "gen_ai.usage.cache_read.input_tokens": 1920,
                             "gen_ai.usage.cache_creation.input_tokens": 50, "gen_ai.usage.output_tokens": 300,
                             "gen_ai.usage.reasoning.output_tokens": 200}), end=END_NS))
    assert rec == {
        "request_id": "chatcmpl-123", "occurred_at": "2026-11-25T10:00:00.123456Z", "api_key_id": "key-a",
        "model": "minimax-m2-7-0613", "endpoint": "chat.completions", "input_tokens": 2006, "cached_tokens": 1920,
        "cache_write_tokens": 50, "output_tokens": 300, "thinking_tokens": 200,
        "tags": {"service": "chatbot", "provider": "openai"},
    }
    # ...and it is a valid record by the rules of POST /v1/usage, with the same values.
    parsed = parse_items([rec], now=NOW)
    assert parsed.errors == [] and parsed.batch[0].to_canonical() == {**rec, "web_search_requests": 0}


def test_without_a_response_id_the_request_id_is_the_trace_and_span_id_in_hex():
    rec = only(span(usage(), end=END_NS, span_id=bytes.fromhex("00f067aa0ba902b7")))
    assert rec["request_id"] == "5b8efff798038103d269b633813fc60c-00f067aa0ba902b7"


def test_model_is_the_response_model_else_the_request_model():
    assert only(span(usage(), end=END_NS))["model"] == "minimax-m2-7"
    assert only(span(usage(**{"gen_ai.response.model": "m-resp"}), end=END_NS))["model"] == "m-resp"


def test_the_api_key_on_the_span_wins_over_the_resource():
    assert only(span(usage(), end=END_NS))["api_key_id"] == "key-a"
    assert only(span(usage(**{"metering.api_key_id": "key-b"}), end=END_NS))["api_key_id"] == "key-b"
    assert only(span(usage(**{"metering.api_key_id": "key-b"}), end=END_NS), resource={})["api_key_id"] == "key-b"


def test_absent_cache_and_reasoning_counts_are_zero_and_unknown():
    rec = only(span(usage(), end=END_NS))
    assert (rec["cached_tokens"], rec["cache_write_tokens"], rec["thinking_tokens"]) == (0, 0, None)


def test_the_pre_1_27_names_of_the_totals_are_read_when_the_current_ones_are_absent():
    rec = only(span(usage(**{"gen_ai.usage.input_tokens": None, "gen_ai.usage.output_tokens": None,
                             "gen_ai.usage.prompt_tokens": 11, "gen_ai.usage.completion_tokens": 7}), end=END_NS))
    assert (rec["input_tokens"], rec["output_tokens"]) == (11, 7)
    both = only(span(usage(**{"gen_ai.usage.prompt_tokens": 11}), end=END_NS))
    assert both["input_tokens"] == 1000  # the current name wins


def test_a_whole_double_is_a_count_as_javascript_sdks_send_numbers():
    assert only(span(usage(**{"gen_ai.usage.input_tokens": 1000.0}), end=END_NS))["input_tokens"] == 1000


@pytest.mark.parametrize(("operation", "extra", "endpoint"), [
    ("chat", {}, "chat.completions"),
    ("chat", {"openai.api.type": "responses"}, "responses"),
    ("chat", {"openai.api.type": "chat_completions"}, "chat.completions"),
    ("chat", {"gen_ai.provider.name": "anthropic"}, "messages"),
    ("chat", {"gen_ai.provider.name": None, "gen_ai.system": "anthropic"}, "messages"),
    ("text_completion", {}, None),
    ("embeddings", {}, None),
    (None, {}, None),
])
def test_endpoint_from_the_operation_name(operation, extra, endpoint):
    rec = only(span(usage(**{"gen_ai.operation.name": operation, **extra}), end=END_NS))
    assert rec.get("endpoint") == endpoint


def test_tags_come_from_the_allow_list_and_metering_tag_attributes_span_over_resource():
    rec = only(span(usage(**{"gen_ai.conversation.id": "conv-1", "gen_ai.agent.name": "helper",
                             "metering.tag.project": "alpha", "metering.tag.team": 7, "metering.tag.beta": True}),
                    end=END_NS),
               resource={"metering.api_key_id": "key-a", "service.name": "svc", "metering.tag.project": "omega",
                         "metering.tag.env": "prod"})
    assert rec["tags"] == {"service": "svc", "provider": "openai", "agent": "helper", "conversation": "conv-1",
                           "project": "alpha", "env": "prod", "team": "7", "beta": "true"}


def test_a_too_long_well_known_value_is_left_out_of_the_tags_but_an_explicit_tag_is_checked():
    rec = only(span(usage(**{"gen_ai.conversation.id": "c" * 300}), end=END_NS))
    assert "conversation" not in rec["tags"]
    rec = only(span(usage(**{"metering.tag.note": "n" * 300}), end=END_NS))
    errors = parse_items([rec], now=NOW).errors
    assert errors[0]["field"] == "tags.note" and "256" in errors[0]["error"]


def test_spans_without_usage_attributes_are_ignored():
    converted = records(span({"http.method": "POST", "gen_ai.request.model": "m"}, n=1, end=END_NS),
                        span(usage(), n=2, end=END_NS), span({}, n=3, end=END_NS))
    assert (converted.spans, len(converted.records), converted.rejected, converted.ignored) == (3, 1, [], 2)
    assert converted.sources[0].span_id == "0000000000000002"


# --- spans that cannot become a record --------------------------------------------------------------


def test_a_span_without_an_api_key_attribute_is_rejected_with_its_reason():
    text = reason(span(usage(), end=END_NS), resource={"service.name": "svc"})
    assert "metering.api_key_id" in text and "span or its resource" in text


@pytest.mark.parametrize(("attrs", "end", "words"), [
    (usage(**{"gen_ai.request.model": None}), END_NS, "gen_ai.response.model"),
    (usage(**{"gen_ai.request.model": 5}), END_NS, "must be a string"),
    (usage(**{"gen_ai.usage.input_tokens": "1000"}), END_NS, "gen_ai.usage.input_tokens must be an integer"),
    (usage(**{"gen_ai.usage.output_tokens": 2.5}), END_NS, "gen_ai.usage.output_tokens must be an integer"),
    (usage(**{"gen_ai.usage.input_tokens": None}), END_NS, "no gen_ai.usage.input_tokens"),
    ({"gen_ai.usage.total_tokens": 5, "gen_ai.request.model": "m"}, END_NS, "no gen_ai.usage.input_tokens"),
    (usage(**{"metering.api_key_id": 12}), END_NS, "metering.api_key_id must be a string"),
    (usage(**{"metering.tag.x": b"\x00"}), END_NS, "metering.tag.x must be a string"),
    (usage(), 0, "no end time"),
])
def test_a_span_the_record_cannot_be_made_from_is_rejected_naming_the_attribute(attrs, end, words):
    assert words in reason(span(attrs, end=end))


def test_without_a_response_id_a_span_needs_valid_ids():
    assert "trace id and span id" in reason(span(usage(), end=END_NS, trace_id=bytes(16)))
    assert "trace id and span id" in reason(span(usage(), end=END_NS, span_id=b""))
    # with a response id the ids do not matter
    assert only(span(usage(**{"gen_ai.response.id": "r"}), end=END_NS, span_id=b""))["request_id"] == "r"


def test_record_rules_reject_what_the_span_alone_cannot_tell():
    rec = only(span(usage(**{"gen_ai.usage.cache_read.input_tokens": 900, "gen_ai.usage.cache_creation.input_tokens": 200}),
                    end=END_NS))
    error = parse_items([rec], now=NOW).errors[0]
    assert error["field"] == "cached_tokens"
    assert otlp.record_error(error).endswith("(from gen_ai.usage.cache_read.input_tokens)")
    future = only(span(usage(), end=nanos(NOW) + 3600 * 10**9))
    error = parse_items([future], now=NOW).errors[0]
    assert "future" in error["error"] and otlp.record_error(error).endswith("(from end_time_unix_nano)")


# --- the body -------------------------------------------------------------------------------------------


def convert(body: bytes, content_type="application/x-protobuf", encoding=None, limit=10 * 2**20, max_records=10_000):
    return otlp.convert(body, content_type=content_type, content_encoding=encoding, limit=limit,
                        max_records=max_records)


def test_protobuf_gzip_and_deflate_bodies_give_the_same_records():
    body = request(span(usage(), end=END_NS)).SerializeToString()
    plain = convert(body).records
    assert len(plain) == 1
    assert convert(gzip.compress(body), encoding="gzip").records == plain
    assert convert(zlib.compress(body), encoding="deflate").records == plain
    raw = zlib.compressobj(wbits=-15)
    assert convert(raw.compress(body) + raw.flush(), encoding="deflate").records == plain
    assert convert(gzip.compress(body[:10]) + gzip.compress(body[10:]), encoding="gzip").records == plain  # two members


def test_a_body_that_decompresses_beyond_the_limit_is_too_large():
    bomb = gzip.compress(b"\x00" * (2 * 2**20))
    with pytest.raises(PayloadTooLarge, match="decompresses to more than"):
        convert(bomb, encoding="gzip", limit=2**20)


def test_too_many_usage_spans_are_too_large():
    body = request(*(span(usage(), n=i + 1, end=END_NS) for i in range(3))).SerializeToString()
    with pytest.raises(PayloadTooLarge, match="at most 2 per request"):
        convert(body, max_records=2)


@pytest.mark.parametrize(("content_type", "encoding", "error"), [
    ("text/plain", None, UnsupportedMediaType),
    (None, None, UnsupportedMediaType),
    ("application/x-protobuf", "br", UnsupportedMediaType),
    ("application/x-protobuf", "gzip", BadRequest),  # not gzip data
])
def test_other_encodings_are_refused(content_type, encoding, error):
    with pytest.raises(error):
        convert(b"\x0a\x00", content_type=content_type, encoding=encoding)


def test_bytes_that_are_not_protobuf_are_a_bad_request():
    with pytest.raises(BadRequest, match="not an OTLP ExportTraceServiceRequest in protobuf"):
        convert(b"\xff\xff\xff\xff")


def test_an_empty_request_is_nothing_to_do():
    assert convert(b"").spans == 0
    assert convert(b"{}", content_type="application/json; charset=utf-8").spans == 0


# --- OTLP/JSON ------------------------------------------------------------------------------------------


HAND_WRITTEN = {  # as the OTLP specification writes it: hex ids (any case), int64 as strings, enums as integers
    "resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "chatbot"}},
                                    {"key": "metering.api_key_id", "value": {"stringValue": "key-a"}}]},
        "scopeSpans": [{
            "scope": {"name": "my.library", "version": "1.0.0"},
            "spans": [{
                "traceId": "5B8EFFF798038103D269B633813FC60C", "spanId": "EEE19B7EC3C1B174",
                "parentSpanId": "eee19b7ec3c1b173", "name": "chat minimax-m2-7", "kind": 3,
                "startTimeUnixNano": "1764064799000000000", "endTimeUnixNano": "1764064800123456789",
                "attributes": [
                    {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
                    {"key": "gen_ai.request.model", "value": {"stringValue": "minimax-m2-7"}},
                    {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "1000"}},
                    {"key": "gen_ai.usage.output_tokens", "value": {"intValue": 300}},
                    {"key": "gen_ai.usage.reasoning.output_tokens", "value": {"intValue": "100"}},
                ],
                "links": [{"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331"}],
                "status": {"code": 1},
                "somethingNew": {"a future field": "is ignored"},
            }],
        }],
    }],
}


def test_otlp_json_as_the_specification_writes_it():
    converted = convert(orjson.dumps(HAND_WRITTEN), content_type="application/json")
    assert converted.rejected == []
    assert converted.records == [{
        "request_id": "5b8efff798038103d269b633813fc60c-eee19b7ec3c1b174", "occurred_at": "2025-11-25T10:00:00.123456Z",
        "api_key_id": "key-a", "model": "minimax-m2-7", "endpoint": "chat.completions", "input_tokens": 1000,
        "cached_tokens": 0, "cache_write_tokens": 0, "output_tokens": 300, "thinking_tokens": 100,
        "tags": {"service": "chatbot"},
    }]


def test_otlp_json_and_protobuf_of_one_request_give_the_same_records():
    message = request(span(usage(**{"gen_ai.usage.cache_read.input_tokens": 10}), end=END_NS, trace_id=TRACE))
    as_json = json_format.MessageToDict(message)  # protobuf's own mapping writes bytes as base64 ...
    for resource_spans in as_json["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for s in scope_spans["spans"]:  # ... which OTLP/JSON replaces with hex
                s["traceId"] = message.resource_spans[0].scope_spans[0].spans[0].trace_id.hex()
                s["spanId"] = message.resource_spans[0].scope_spans[0].spans[0].span_id.hex()
    assert convert(orjson.dumps(as_json), content_type="application/json").records == \
        convert(message.SerializeToString()).records


def test_otlp_json_field_names_in_proto_spelling_and_numbers_as_numbers_are_read_too():
    body = {"resource_spans": [{"resource": {"attributes": [
        {"key": "metering.api_key_id", "value": {"string_value": "key-a"}}]}, "scope_spans": [{"spans": [{
            "trace_id": "5b8efff798038103d269b633813fc60c", "span_id": "eee19b7ec3c1b174",
            "end_time_unix_nano": 1764064800123456789, "attributes": [
                {"key": "gen_ai.request.model", "value": {"string_value": "m"}},
                {"key": "gen_ai.usage.input_tokens", "value": {"int_value": 10}},
                {"key": "gen_ai.usage.output_tokens", "value": {"doubleValue": 4.0}}]}]}]}]}
    rec = convert(orjson.dumps(body), content_type="application/json").records[0]
    assert (rec["request_id"], rec["occurred_at"], rec["input_tokens"], rec["output_tokens"]) == (
        "5b8efff798038103d269b633813fc60c-eee19b7ec3c1b174", "2025-11-25T10:00:00.123456Z", 10, 4)


def json_span(*attributes: dict) -> bytes:
    return orjson.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
        "endTimeUnixNano": "1764064800000000000", "attributes": [
            {"key": "metering.api_key_id", "value": {"stringValue": "key-a"}},
            {"key": "gen_ai.request.model", "value": {"stringValue": "m"}}, *attributes]}]}]}]})


@pytest.mark.parametrize(("value", "words"), [
    ({"doubleValue": "NaN"}, "got double nan"),
    ({"doubleValue": 2.5}, "got double 2.5"),
    ({"stringValue": "7"}, "got string '7'"),
    ({"arrayValue": {"values": [{"intValue": "7"}]}}, "got array_value"),
    ({}, "got empty"),
])
def test_an_otlp_json_value_that_is_not_a_count_rejects_the_span(value, words):
    converted = convert(json_span({"key": "gen_ai.usage.input_tokens", "value": value},
                                  {"key": "gen_ai.usage.output_tokens", "value": {"intValue": "1"}}),
                        content_type="application/json")
    assert converted.records == [] and "gen_ai.usage.input_tokens must be an integer" in converted.rejected[0][1]
    assert words in converted.rejected[0][1]


@pytest.mark.parametrize(("value", "words"), [
    ({"intValue": "ten"}, "intValue must be a 64-bit integer"),
    ({"intValue": str(2**63)}, "intValue must be a 64-bit integer"),
    ({"stringValue": 5}, "stringValue must be a string"),
    ({"boolValue": "yes"}, "boolValue must be true or false"),
    ({"doubleValue": "1.5"}, "doubleValue must be a number"),
])
def test_an_otlp_json_value_of_the_wrong_json_type_is_a_bad_request_naming_where(value, words):
    with pytest.raises(BadRequest, match=r"resourceSpans\[0\]\.scopeSpans\[0\]\.spans\[0\]\.attributes\[2\]"):
        convert(json_span({"key": "x", "value": value}), content_type="application/json")
    with pytest.raises(BadRequest, match=words):
        convert(json_span({"key": "x", "value": value}), content_type="application/json")


def test_base64_ids_are_refused_naming_the_field_and_the_rule():
    body = orjson.loads(orjson.dumps(HAND_WRITTEN))
    body["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"] = "W47/95gDgQPSabYzgT/GDA=="
    with pytest.raises(BadRequest, match=r"resourceSpans\[0\]\.scopeSpans\[0\]\.spans\[0\]\.traceId must be a hex"):
        convert(orjson.dumps(body), content_type="application/json")


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"resourceSpans": {}}', b'{"resourceSpans": [5]}',
                                  b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"endTimeUnixNano": "soon"}]}]}]}'])
def test_json_that_is_not_an_otlp_request_is_a_bad_request(body):
    with pytest.raises(BadRequest):
        convert(body, content_type="application/json")


# --- the response ---------------------------------------------------------------------------------------


def test_the_response_leaves_partial_success_unset_when_nothing_was_rejected():
    assert otlp.export_response([], spans=3, media=otlp.PROTOBUF) == b""
    assert orjson.loads(otlp.export_response([], spans=3, media=otlp.JSON)) == {}


def test_the_response_names_each_rejected_span_in_the_requests_encoding():
    ref = otlp.SpanRef("5b8e", "00f0", "chat m")
    rejections = [(ref, "no metering.api_key_id attribute")] * 25
    message = ExportTraceServiceResponse.FromString(otlp.export_response(rejections, spans=30, media=otlp.PROTOBUF))
    assert message.partial_success.rejected_spans == 25
    text = message.partial_success.error_message
    assert text.startswith("25 of 30 spans rejected: span 00f0 of trace 5b8e ('chat m'): no metering.api_key_id")
    assert text.count("no metering.api_key_id") == 20 and text.endswith("; and 5 more")
    as_json = orjson.loads(otlp.export_response(rejections[:1], spans=1, media=otlp.JSON))
    assert as_json == {"partialSuccess": {"rejectedSpans": "1", "errorMessage":
                                          "1 of 1 spans rejected: span 00f0 of trace 5b8e ('chat m'): "
                                          "no metering.api_key_id attribute"}}
