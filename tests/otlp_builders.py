"""OTLP trace requests built from the official protobuf classes (opentelemetry-proto), for tests
that need exact control of a span (ids, end time, attribute types) that an SDK would not give."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

TRACE = bytes.fromhex("5b8efff798038103d269b633813fc60c")


def value(v: Any) -> AnyValue:
    if isinstance(v, AnyValue):
        return v
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    if isinstance(v, bytes):
        return AnyValue(bytes_value=v)
    return AnyValue(string_value=v)


def attributes(attrs: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=value(v)) for k, v in attrs.items()]


def nanos(at: datetime) -> int:
    return int(at.timestamp()) * 1_000_000_000 + at.microsecond * 1000


def span(attrs: dict[str, Any], *, n: int = 1, end: int | datetime = 0, trace_id: bytes = TRACE,
         span_id: bytes | None = None, name: str = "chat minimax-m2-7") -> Span:
    end_ns = nanos(end) if isinstance(end, datetime) else end
    return Span(trace_id=trace_id, span_id=span_id if span_id is not None else n.to_bytes(8, "big"), name=name,
                kind=Span.SPAN_KIND_CLIENT, start_time_unix_nano=max(end_ns - 1_000_000_000, 0),
                end_time_unix_nano=end_ns, attributes=attributes(attrs))


def usage(**extra: Any) -> dict[str, Any]:
    """The attributes of a typical chat span with usage; extra ones override (None removes)."""
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "minimax-m2-7", "gen_ai.usage.input_tokens": 1000,
        "gen_ai.usage.output_tokens": 300,
    }
    attrs.update(extra)
    return {k: v for k, v in attrs.items() if v is not None}


def request(*spans: Span, resource: dict[str, Any] | None = None) -> ExportTraceServiceRequest:
    res = Resource(attributes=attributes({"service.name": "chatbot", "metering.api_key_id": "key-a"}
                                         if resource is None else resource))
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(resource=res, scope_spans=[
        ScopeSpans(spans=list(spans))])])
