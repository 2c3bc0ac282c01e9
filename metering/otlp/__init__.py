"""OTLP/HTTP trace export requests -> canonical usage records (pure: no I/O, no clock).

An OpenTelemetry SDK's OTLP exporter posts an `ExportTraceServiceRequest`, in binary protobuf
(`application/x-protobuf`) or in OTLP's JSON encoding (`application/json`), maybe gzip- or
deflate-compressed. A span that carries GenAI usage attributes (`gen_ai.usage.*`, the semantic
conventions for generative AI) becomes one canonical record (CONTRACT.md "Integrations"):

    request_id          gen_ai.response.id, else "<trace id>-<span id>" (lower-case hex)
    occurred_at         the span's end (end_time_unix_nano), UTC
    model               gen_ai.response.model, else gen_ai.request.model
    api_key_id          metering.api_key_id, on the span, else on its resource
    input_tokens        gen_ai.usage.input_tokens (cache reads and writes included, as the conventions say)
    cached_tokens       gen_ai.usage.cache_read.input_tokens
    cache_write_tokens  gen_ai.usage.cache_creation.input_tokens
    output_tokens       gen_ai.usage.output_tokens (reasoning included)
    thinking_tokens     gen_ai.usage.reasoning.output_tokens; null (unknown) when absent
    endpoint            from gen_ai.operation.name `chat`: `responses` when openai.api.type says so,
                        `messages` for the anthropic provider, else `chat.completions`; absent otherwise
    tags                TAG_SOURCES below, and every `metering.tag.NAME` attribute (span over resource)

The conventions before 1.27 named the two totals `gen_ai.usage.prompt_tokens` and
`gen_ai.usage.completion_tokens`; they are read when the current names are absent.

A span without `gen_ai.usage.*` attributes is ignored. A span that has them but cannot become a
record (no api key attribute, no end time, a token count that is not an integer...) is rejected
with its reason; the records themselves are then checked by the same rules as POST /v1/usage.
A body that is not an OTLP trace export raises BadRequest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from metering.errors import PayloadTooLarge
from metering.otlp.wire import (
    JSON,
    PROTOBUF,
    Other,
    Resources,
    SpanData,
    decode_json,
    decode_protobuf,
    decompress,
    media_type,
    protobuf_spans,
)

__all__ = ["JSON", "PROTOBUF", "Converted", "SpanRef", "convert", "export_response", "media_type", "record_error",
           "spans_to_records"]
from metering.records import MAX_TAG_VALUE

USAGE_PREFIX = "gen_ai.usage."
INPUT = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")  # the current name, then the pre-1.27 one
OUTPUT = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
CACHE_READ = "gen_ai.usage.cache_read.input_tokens"
CACHE_WRITE = "gen_ai.usage.cache_creation.input_tokens"
REASONING = "gen_ai.usage.reasoning.output_tokens"
API_KEY = "metering.api_key_id"
TAG_PREFIX = "metering.tag."
# Tags taken from well-known attributes (span over resource): tag name -> attribute names, first found
# wins. A value that is not a string of at most MAX_TAG_VALUE characters is left out (these are
# descriptive; an explicit metering.tag.* attribute is checked like any record's tags instead).
TAG_SOURCES = {
    "service": ("service.name",),
    "provider": ("gen_ai.provider.name", "gen_ai.system"),
    "agent": ("gen_ai.agent.name",),
    "conversation": ("gen_ai.conversation.id",),
}
# Where each record field comes from, to word a record error in the span's terms.
FIELD_SOURCES = {
    "request_id": "gen_ai.response.id", "occurred_at": "end_time_unix_nano", "api_key_id": API_KEY,
    "model": "gen_ai.response.model", "input_tokens": INPUT[0], "cached_tokens": CACHE_READ,
    "cache_write_tokens": CACHE_WRITE, "output_tokens": OUTPUT[0], "thinking_tokens": REASONING,
    "tags": "metering.tag.*",
}
_MAX_REASONS = 20  # rejections named in a response's error_message; the count covers them all
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class SpanRef:
    """Which span a record or a rejection is about (ids in lower-case hex)."""

    trace_id: str
    span_id: str
    name: str

    def __str__(self) -> str:
        return f"span {self.span_id or '?'} of trace {self.trace_id or '?'} ({self.name[:80]!r})"


@dataclass
class Converted:
    """A request's records (in span order, each with its span), and the spans rejected before
    the record rules were applied."""

    spans: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)
    sources: list[SpanRef] = field(default_factory=list)
    rejected: list[tuple[SpanRef, str]] = field(default_factory=list)

    @property
    def ignored(self) -> int:
        """Spans without usage attributes."""
        return self.spans - len(self.records) - len(self.rejected)


class SpanRejected(Exception):
    """A usage span no record can be made of; the message says why, in the span's terms."""


# --- spans -> records ----------------------------------------------------------------------------


def convert(body: bytes, *, content_type: str | None, content_encoding: str | None, limit: int,
            max_records: int) -> Converted:
    """A request body as it arrived -> its records and rejected spans (at most `max_records` usage
    spans, and `limit` bytes decompressed, as POST /v1/usage allows)."""
    media = media_type(content_type)
    body = decompress(body, content_encoding, limit=limit)
    converted = collect(decode_protobuf(body) if media == PROTOBUF else decode_json(body))
    if len(converted.records) + len(converted.rejected) > max_records:
        raise PayloadTooLarge(f"the body holds {len(converted.records) + len(converted.rejected)} spans with usage; "
                              f"at most {max_records} per request")
    return converted


def spans_to_records(message: ExportTraceServiceRequest) -> Converted:
    return collect(protobuf_spans(message))


def collect(resources: Resources) -> Converted:
    out = Converted()
    for resource, spans in resources:
        defaults = _Defaults.of(resource)
        for span in spans:
            out.spans += 1
            if not any(key.startswith(USAGE_PREFIX) for key in span.attributes):
                continue
            ref = SpanRef(span.trace_id, span.span_id, span.name)
            try:
                out.records.append(span_record(span, defaults))
            except SpanRejected as exc:
                out.rejected.append((ref, str(exc)))
                continue
            out.sources.append(ref)
    return out


@dataclass(frozen=True, slots=True)
class _Defaults:
    """What a resource gives each of its spans: the api key and tags, read once a resource."""

    api_key: Any
    derived_tags: dict[str, str]
    tags: dict[str, Any]  # metering.tag.* attributes, unchecked

    @classmethod
    def of(cls, resource: dict[str, Any]) -> _Defaults:
        derived = {name: value for name, keys in TAG_SOURCES.items()
                   if (value := _string(resource, *keys)) is not None}
        return cls(resource.get(API_KEY), derived,
                   {key[len(TAG_PREFIX):]: value for key, value in resource.items() if key.startswith(TAG_PREFIX)})


def span_record(span: SpanData, defaults: _Defaults) -> dict[str, Any]:
    """One usage span -> a canonical record (checked here only for what the span alone can tell)."""
    attributes = span.attributes
    api_key = attributes.get(API_KEY)
    model = _first(attributes, "gen_ai.response.model", "gen_ai.request.model")
    record: dict[str, Any] = {
        "request_id": _string(attributes, "gen_ai.response.id") or _span_key(span),
        "occurred_at": _end_time(span.end_time_unix_nano),
        "api_key_id": _required_string(API_KEY, api_key if api_key is not None else defaults.api_key,
                                       "on the span or its resource: the service cannot tell whose usage it is"),
        "model": _required_string("gen_ai.response.model", model, "nor gen_ai.request.model"),
        "input_tokens": _count(attributes, INPUT, required=True),
        "cached_tokens": _count(attributes, (CACHE_READ,)) or 0,
        "cache_write_tokens": _count(attributes, (CACHE_WRITE,)) or 0,
        "output_tokens": _count(attributes, OUTPUT, required=True),
        "thinking_tokens": _count(attributes, (REASONING,)),
    }
    endpoint = _endpoint(attributes)
    if endpoint:
        record["endpoint"] = endpoint
    tags = _tags(attributes, defaults)
    if tags:
        record["tags"] = tags
    return record


def _describe(value: Any) -> str:
    if isinstance(value, Other):
        return value.kind
    kind = {str: "string", bool: "boolean", int: "integer", float: "double"}.get(type(value), type(value).__name__)
    return f"{kind} {value!r}"[:60]


def _first(attributes: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        value = attributes.get(key)
        if value is not None:
            return value
    return None


def _string(attributes: dict[str, Any], *keys: str) -> str | None:
    """The first of `keys` holding a non-empty string."""
    for key in keys:
        value = attributes.get(key)
        if value and type(value) is str:
            return value
    return None


def _required_string(key: str, value: Any, missing: str) -> str:
    if value is None:
        raise SpanRejected(f"no {key} attribute {missing}")
    if type(value) is not str:
        raise SpanRejected(f"{key} must be a string attribute, got {_describe(value)}")
    return value


def _count(attributes: dict[str, Any], keys: tuple[str, ...], *, required: bool = False) -> int | None:
    for key in keys:
        value = attributes.get(key)
        if value is None:
            continue
        if type(value) is int:
            return value
        # Some SDKs (JavaScript) hold every number as a double: a whole one is a count.
        if type(value) is float and value.is_integer():
            return int(value)
        raise SpanRejected(f"{key} must be an integer attribute, got {_describe(value)}")
    if required:
        raise SpanRejected(f"the span has {USAGE_PREFIX}* attributes but no {keys[0]}")
    return None


def _span_key(span: SpanData) -> str:
    trace_id, span_id = span.trace_id, span.span_id
    if len(trace_id) != 32 or len(span_id) != 16 or not trace_id.strip("0") or not span_id.strip("0"):
        raise SpanRejected("no gen_ai.response.id attribute, and the span has no valid trace id and span id "
                           "to name the request by")
    return f"{trace_id}-{span_id}"


def _end_time(nanos: int) -> str:
    if not nanos:
        raise SpanRejected("the span has no end time (end_time_unix_nano is 0)")
    try:
        at = _EPOCH + timedelta(microseconds=nanos // 1000)
    except OverflowError:
        raise SpanRejected(f"end_time_unix_nano {nanos} is not a time") from None
    return at.isoformat().replace("+00:00", "Z")


def _endpoint(attributes: dict[str, Any]) -> str | None:
    if attributes.get("gen_ai.operation.name") != "chat":
        return None
    api = _string(attributes, "openai.api.type")
    if api == "responses":
        return "responses"
    if api is None and _string(attributes, "gen_ai.provider.name", "gen_ai.system") == "anthropic":
        return "messages"
    return "chat.completions"


def _tags(attributes: dict[str, Any], defaults: _Defaults) -> dict[str, str]:
    tags: dict[str, str] = {}
    for name, keys in TAG_SOURCES.items():
        value = _string(attributes, *keys) or defaults.derived_tags.get(name)
        if value is not None and len(value) <= MAX_TAG_VALUE:
            tags[name] = value
    for name, value in defaults.tags.items():
        tags[name] = _tag_value(TAG_PREFIX + name, value)
    for key, value in attributes.items():  # the span's own tags win over its resource's
        if key.startswith(TAG_PREFIX):
            tags[key[len(TAG_PREFIX):]] = _tag_value(key, value)
    return tags


def _tag_value(key: str, value: Any) -> str:
    if type(value) is str:
        return value
    if type(value) is bool:
        return "true" if value else "false"
    if type(value) in (int, float):
        return str(value)
    raise SpanRejected(f"{key} must be a string attribute, got {_describe(value)}")


# --- the response --------------------------------------------------------------------------------


def rejection_message(rejections: list[tuple[SpanRef, str]], spans: int) -> str:
    reasons = [f"{ref}: {reason}" for ref, reason in rejections[:_MAX_REASONS]]
    more = f"; and {len(rejections) - _MAX_REASONS} more" if len(rejections) > _MAX_REASONS else ""
    return f"{len(rejections)} of {spans} spans rejected: " + "; ".join(reasons) + more


def record_error(error: dict[str, Any]) -> str:
    """A record error of the ingest path (metering.ingest), in the span's terms."""
    source = FIELD_SOURCES.get(error.get("field") or "")
    return f"{error['error']} (from {source})" if source else error["error"]


def export_response(rejections: list[tuple[SpanRef, str]], *, spans: int, media: str) -> bytes:
    """OTLP's ExportTraceServiceResponse in the request's encoding: `partial_success` set only
    when spans were rejected, as the specification asks."""
    response = ExportTraceServiceResponse()
    if rejections:
        response.partial_success.CopyFrom(ExportTracePartialSuccess(
            rejected_spans=len(rejections), error_message=rejection_message(rejections, spans)))
    if media == PROTOBUF:
        return response.SerializeToString()
    return json_format.MessageToJson(response, indent=None).encode()
