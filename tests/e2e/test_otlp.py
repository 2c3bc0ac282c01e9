"""The official OpenTelemetry SDK and its OTLP/HTTP exporters (protobuf, and JSON) sending real
spans to `metering serve` on 127.0.0.1: the usage spans land in the ledger with exact costs, spans
without usage are ignored, a re-export stores nothing twice, and a span without an api key comes
back in OTLP's partial_success."""

from __future__ import annotations

import time
from decimal import Decimal

import httpx
import pytest
import requests
from opentelemetry.exporter.otlp.json.http.trace_exporter import OTLPSpanExporter as JsonSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.conftest import ADMIN, INGEST, MODEL, Server, auth

pytestmark = pytest.mark.e2e
MILLION = Decimal(1_000_000)
PAGE = {"input": Decimal("0.15"), "cached": Decimal("0.03"), "output": Decimal("0.60")}  # the rate page, current


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("otlp") / "otlp.duckdb").start()
    yield s
    s.stop()


class Recorder(requests.Session):
    """The exporter's own HTTP session, keeping each response it got (to read OTLP's answer)."""

    def __init__(self) -> None:
        super().__init__()
        self.responses: list[requests.Response] = []
        self.hooks["response"].append(lambda r, *args, **kwargs: self.responses.append(r))


def exporter(server: Server, session: requests.Session | None = None, **kwargs) -> OTLPSpanExporter:
    return OTLPSpanExporter(endpoint=f"{server.url}/v1/traces", headers=auth(INGEST), session=session, **kwargs)


def provider(span_exporter, resource: dict, *, batch: bool = True) -> TracerProvider:
    p = TracerProvider(resource=Resource.create(resource))
    p.add_span_processor(BatchSpanProcessor(span_exporter) if batch else SimpleSpanProcessor(span_exporter))
    return p


END = (int(time.time()) - 3600) * 10**9 + 123_456_789  # an hour ago, with nanoseconds below a microsecond


def chat(tracer, name: str, attrs: dict, end: int = END):
    span = tracer.start_span(name, start_time=end - 2 * 10**9, attributes=attrs)
    span.end(end_time=end)
    return span


def cost(input_tokens: int, cached: int, output: int) -> Decimal:
    return (Decimal(input_tokens - cached) * PAGE["input"] + Decimal(cached) * PAGE["cached"]
            + Decimal(output) * PAGE["output"]) / MILLION


def totals(server: Server, key: str) -> dict:
    r = httpx.get(f"{server.url}/v1/usage", params={"start": "2000-01-01", "end": "2099-01-01", "bucket": "month",
                                                     "api_key_id": key}, headers=auth(ADMIN))
    assert r.status_code == 200, r.text
    return r.json()["totals"]


def record(server: Server, request_id: str) -> dict:
    r = httpx.get(f"{server.url}/v1/records/{request_id}", headers=auth(ADMIN))
    assert r.status_code == 200, r.text
    return r.json()


def test_protobuf_exporter_meters_usage_spans_exactly_and_ignores_the_others(server):
    session = Recorder()
    p = provider(exporter(server, session), {"service.name": "chatbot", "metering.api_key_id": "otel-proto"})
    tracer = p.get_tracer("tests.e2e.test_otlp")
    with tracer.start_as_current_span("POST /ask"):  # a span without usage: ignored
        chat(tracer, "chat minimax-m2-7", {
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": MODEL,
            "gen_ai.response.model": MODEL, "gen_ai.response.id": "chatcmpl-otel-1",
            "gen_ai.usage.input_tokens": 2006, "gen_ai.usage.cache_read.input_tokens": 1920,
            "gen_ai.usage.cache_creation.input_tokens": 50, "gen_ai.usage.output_tokens": 300,
            "gen_ai.usage.reasoning.output_tokens": 200, "metering.tag.project": "alpha"})
        chat(tracer, "chat minimax-m2-7", {
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic", "gen_ai.request.model": MODEL,
            "gen_ai.response.id": "msg-otel-2", "gen_ai.usage.input_tokens": 5000, "gen_ai.usage.output_tokens": 40})
        chat(tracer, "execute_tool search", {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"})
    assert p.force_flush()
    p.shutdown()

    assert [r.status_code for r in session.responses] == [200]
    assert not ExportTraceServiceResponse.FromString(session.responses[0].content).HasField("partial_success")
    first = record(server, "chatcmpl-otel-1")
    assert first["record"] == {
        "request_id": "chatcmpl-otel-1", "occurred_at": first["record"]["occurred_at"], "api_key_id": "otel-proto",
        "model": MODEL, "endpoint": "chat.completions", "input_tokens": 2006, "cached_tokens": 1920,
        "cache_write_tokens": 50, "output_tokens": 300, "thinking_tokens": 200, "web_search_requests": 0,
        "tags": {"service": "chatbot", "provider": "openai", "project": "alpha"},
    }
    assert first["record"]["occurred_at"].endswith(".123456Z")  # the span's end, to the microsecond
    assert first["cost"]["total"] == "0.0002505"  # 86 input + 1920 cached + 300 output at the rate page
    assert record(server, "msg-otel-2")["record"]["endpoint"] == "messages"
    got = totals(server, "otel-proto")
    assert got["requests"] == 2  # the HTTP span and the tool span made no record
    assert Decimal(got["cost"]) == Decimal("0.0002505") + cost(5000, 0, 40)


def test_a_re_exported_batch_is_stored_once(server):
    memory = InMemorySpanExporter()
    p = provider(memory, {"metering.api_key_id": "otel-again"}, batch=False)
    tracer = p.get_tracer("tests.e2e.test_otlp")
    for i in range(5):  # no gen_ai.response.id: the records are named by trace and span id
        chat(tracer, "chat", {"gen_ai.request.model": MODEL, "gen_ai.usage.input_tokens": 100 + i,
                              "gen_ai.usage.output_tokens": 10})
    spans = memory.get_finished_spans()
    span_exporter = exporter(server)
    assert span_exporter.export(spans) == SpanExportResult.SUCCESS
    before = totals(server, "otel-again")
    assert before["requests"] == 5 and Decimal(before["cost"]) == sum(cost(100 + i, 0, 10) for i in range(5))
    assert span_exporter.export(spans) == SpanExportResult.SUCCESS  # as an exporter retrying after a lost answer
    assert span_exporter.export(spans[1:3]) == SpanExportResult.SUCCESS
    assert totals(server, "otel-again") == before
    ctx = spans[0].context
    assert record(server, f"{ctx.trace_id:032x}-{ctx.span_id:016x}")["record"]["input_tokens"] == 100
    span_exporter.shutdown()
    p.shutdown()


def test_a_span_without_an_api_key_comes_back_in_partial_success(server):
    session = Recorder()
    p = provider(exporter(server, session), {"service.name": "no-key-service"}, batch=False)
    tracer = p.get_tracer("tests.e2e.test_otlp")
    keyless = chat(tracer, "chat keyless", {"gen_ai.request.model": MODEL, "gen_ai.usage.input_tokens": 7,
                                            "gen_ai.usage.output_tokens": 1})
    chat(tracer, "chat keyed", {"gen_ai.request.model": MODEL, "gen_ai.usage.input_tokens": 8,
                                "gen_ai.usage.output_tokens": 1, "metering.api_key_id": "otel-keyed"})
    p.shutdown()
    first, second = (ExportTraceServiceResponse.FromString(r.content) for r in session.responses)
    assert first.partial_success.rejected_spans == 1
    assert f"span {keyless.context.span_id:016x}" in first.partial_success.error_message
    assert "no metering.api_key_id attribute" in first.partial_success.error_message
    assert not second.HasField("partial_success")
    assert totals(server, "otel-keyed")["input_tokens"] == 8


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
def test_gzip_exports_in_either_encoding_name_records_by_the_hex_ids(server, encoding):
    key = f"otel-gzip-{encoding}"
    if encoding == "json":  # OpenTelemetry's OTLP/JSON exporter: hex ids, int64 as strings
        from opentelemetry.exporter.otlp.common.http import Compression as JsonCompression

        span_exporter = JsonSpanExporter(endpoint=f"{server.url}/v1/traces", headers=auth(INGEST),
                                         compression=JsonCompression.GZIP)
    else:
        span_exporter = exporter(server, compression=Compression.Gzip)
    p = provider(span_exporter, {"metering.api_key_id": key})
    tracer = p.get_tracer("tests.e2e.test_otlp")
    spans = [chat(tracer, f"chat {i}", {"gen_ai.request.model": MODEL, "gen_ai.usage.input_tokens": 1000 * (i + 1),
                                         "gen_ai.usage.cache_read.input_tokens": 500, "gen_ai.usage.output_tokens": 20})
             for i in range(3)]
    assert p.force_flush()
    p.shutdown()
    got = totals(server, key)
    assert got["requests"] == 3 and Decimal(got["cost"]) == sum(cost(1000 * (i + 1), 500, 20) for i in range(3))
    for i, span in enumerate(spans):
        stored = record(server, f"{span.context.trace_id:032x}-{span.context.span_id:016x}")["record"]
        assert (stored["api_key_id"], stored["input_tokens"], stored["cached_tokens"]) == (key, 1000 * (i + 1), 500)
