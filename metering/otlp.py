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

import base64
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from metering.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

PROTOBUF, JSON = "application/x-protobuf", "application/json"
_MEDIA_TYPES = {"application/x-protobuf": PROTOBUF, "application/protobuf": PROTOBUF, "application/json": JSON}

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
_MAX_TAG_VALUE = 256
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
    pass


# --- the body ----------------------------------------------------------------------------------


def media_type(content_type: str | None) -> str:
    """PROTOBUF or JSON from a Content-Type header; anything else is 415."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media not in _MEDIA_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type {media or '(none)'!r} is not an OTLP encoding: send application/x-protobuf or application/json"
        )
    return _MEDIA_TYPES[media]


def decompress(body: bytes, content_encoding: str | None, *, limit: int) -> bytes:
    """The body as sent before Content-Encoding (gzip, deflate or none), at most `limit` bytes."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("identity", "none", ""):
        return body
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise UnsupportedMediaType(f"Content-Encoding {encoding!r} is not supported: send gzip, deflate or none")
    wbits = 16 + zlib.MAX_WBITS if encoding != "deflate" else zlib.MAX_WBITS
    try:
        return _inflate(body, wbits, limit)
    except zlib.error as exc:
        if encoding == "deflate":  # some clients send raw deflate without the zlib wrapper
            try:
                return _inflate(body, -zlib.MAX_WBITS, limit)
            except zlib.error:
                pass
        raise BadRequest(f"the body is not valid {encoding} data ({exc})") from None


def _inflate(data: bytes, wbits: int, limit: int) -> bytes:
    """Decompress every member (gzip allows several in a row), refusing more than `limit` bytes."""
    out = bytearray()
    while data:
        inflater = zlib.decompressobj(wbits)
        out += inflater.decompress(data, limit + 1 - len(out))
        if len(out) > limit or inflater.unconsumed_tail:
            raise PayloadTooLarge(f"the body decompresses to more than {limit} bytes (10 MiB)")
        if not inflater.eof:
            raise zlib.error("the compressed data ends early")
        data = inflater.unused_data
    return bytes(out)


def decode_request(body: bytes, media: str) -> ExportTraceServiceRequest:
    """The ExportTraceServiceRequest in a (decompressed) body; BadRequest when it is not one."""
    message = ExportTraceServiceRequest()
    if media == PROTOBUF:
        try:
            message.ParseFromString(body)
        except DecodeError as exc:
            raise BadRequest(f"the body is not an OTLP ExportTraceServiceRequest in protobuf ({exc})") from None
        return message
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object: an OTLP ExportTraceServiceRequest ({\"resourceSpans\": [...]})")
    _hex_ids_to_base64(data)
    try:
        json_format.ParseDict(data, message, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise BadRequest(f"the body is not an OTLP ExportTraceServiceRequest in JSON: {exc}") from None
    return message


def _hex_ids_to_base64(data: dict[str, Any]) -> None:
    """OTLP/JSON writes trace and span ids as hex, where protobuf's JSON mapping (json_format)
    expects base64 for bytes: rewrite them in place, naming the first one that is not hex."""
    for r, resource_spans in enumerate(_list(data, "resourceSpans", "")):
        for s, scope_spans in enumerate(_list(resource_spans, "scopeSpans", f"resourceSpans[{r}]")):
            path = f"resourceSpans[{r}].scopeSpans[{s}]"
            for i, span in enumerate(_list(scope_spans, "spans", path)):
                _rewrite(span, ("traceId", "spanId", "parentSpanId"), f"{path}.spans[{i}]")
                for j, link in enumerate(_list(span, "links", f"{path}.spans[{i}]")):
                    _rewrite(link, ("traceId", "spanId"), f"{path}.spans[{i}].links[{j}]")


def _list(obj: Any, key: str, path: str) -> list[Any]:
    if not isinstance(obj, dict):
        raise BadRequest(f"{path or 'the body'} must be a JSON object")
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRequest(f"{path + '.' if path else ''}{key} must be an array")
    return value


def _rewrite(obj: Any, keys: tuple[str, ...], path: str) -> None:
    if not isinstance(obj, dict):
        raise BadRequest(f"{path} must be a JSON object")
    for key in keys:
        value = obj.get(key)
        if value is None or value == "":
            continue
        try:
            if not isinstance(value, str):
                raise ValueError
            obj[key] = base64.b64encode(bytes.fromhex(value)).decode()
        except ValueError:
            raise BadRequest(f"{path}.{key} must be a hex string (OTLP/JSON encodes trace and span ids as hex, "
                             f"not base64), got {str(value)[:60]!r}") from None


# --- spans -> records ----------------------------------------------------------------------------


def convert(body: bytes, *, content_type: str | None, content_encoding: str | None, limit: int,
            max_records: int) -> Converted:
    """A request body as it arrived -> its records and rejected spans (at most `max_records` usage
    spans, and `limit` bytes decompressed, as POST /v1/usage allows)."""
    media = media_type(content_type)
    converted = spans_to_records(decode_request(decompress(body, content_encoding, limit=limit), media))
    if len(converted.records) + len(converted.rejected) > max_records:
        raise PayloadTooLarge(f"the body holds {len(converted.records) + len(converted.rejected)} spans with usage; "
                              f"at most {max_records} per request")
    return converted


def spans_to_records(request: ExportTraceServiceRequest) -> Converted:
    out = Converted()
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                out.spans += 1
                attributes = _attributes(span.attributes)
                if not any(key.startswith(USAGE_PREFIX) for key in attributes):
                    continue
                ref = SpanRef(span.trace_id.hex(), span.span_id.hex(), span.name)
                try:
                    out.records.append(span_record(span, attributes, resource))
                except SpanRejected as exc:
                    out.rejected.append((ref, str(exc)))
                    continue
                out.sources.append(ref)
    return out


def _attributes(pairs: Any) -> dict[str, AnyValue]:
    return {kv.key: kv.value for kv in pairs}


def span_record(span: Any, attributes: dict[str, AnyValue], resource: dict[str, AnyValue]) -> dict[str, Any]:
    """One usage span -> a canonical record (checked here only for what the span alone can tell)."""
    api_key = _first(attributes, API_KEY)
    record: dict[str, Any] = {
        "request_id": _string(attributes, "gen_ai.response.id") or _span_key(span),
        "occurred_at": _end_time(span.end_time_unix_nano),
        "api_key_id": _required_string(API_KEY, api_key if api_key is not None else _first(resource, API_KEY),
                                       "on the span or its resource: the service cannot tell whose usage it is"),
        "model": _required_string("gen_ai.response.model", _first(attributes, "gen_ai.response.model",
                                                                  "gen_ai.request.model"), "nor gen_ai.request.model"),
        "input_tokens": _count(attributes, INPUT, required=True),
        "cached_tokens": _count(attributes, (CACHE_READ,)) or 0,
        "cache_write_tokens": _count(attributes, (CACHE_WRITE,)) or 0,
        "output_tokens": _count(attributes, OUTPUT, required=True),
        "thinking_tokens": _count(attributes, (REASONING,)),
    }
    endpoint = _endpoint(attributes)
    if endpoint:
        record["endpoint"] = endpoint
    tags = _tags(attributes, resource)
    if tags:
        record["tags"] = tags
    return record


def _kind(value: AnyValue) -> str:
    return value.WhichOneof("value") or "empty"


def _first(attributes: dict[str, AnyValue], *keys: str) -> AnyValue | None:
    for key in keys:
        value = attributes.get(key)
        if value is not None:
            return value
    return None


def _string(attributes: dict[str, AnyValue], *keys: str) -> str | None:
    """The first of `keys` holding a non-empty string."""
    for key in keys:
        value = attributes.get(key)
        if value is not None and _kind(value) == "string_value" and value.string_value:
            return value.string_value
    return None


def _required_string(key: str, value: AnyValue | None, missing: str) -> str:
    if value is None:
        raise SpanRejected(f"no {key} attribute {missing}")
    if _kind(value) != "string_value":
        raise SpanRejected(f"{key} must be a string attribute, got {_kind(value)} {_show(value)}")
    return value.string_value


def _count(attributes: dict[str, AnyValue], keys: tuple[str, ...], *, required: bool = False) -> int | None:
    for key in keys:
        value = attributes.get(key)
        if value is None:
            continue
        kind = _kind(value)
        if kind == "int_value":
            return value.int_value
        # Some SDKs (JavaScript) hold every number as a double: a whole one is a count.
        if kind == "double_value" and value.double_value.is_integer():
            return int(value.double_value)
        raise SpanRejected(f"{key} must be an integer attribute, got {kind} {_show(value)}")
    if required:
        raise SpanRejected(f"the span has {USAGE_PREFIX}* attributes but no {keys[0]}")
    return None


def _show(value: AnyValue) -> str:
    return repr(getattr(value, _kind(value), None))[:40]


def _span_key(span: Any) -> str:
    trace_id, span_id = span.trace_id, span.span_id
    if len(trace_id) != 16 or len(span_id) != 8 or not any(trace_id) or not any(span_id):
        raise SpanRejected("no gen_ai.response.id attribute, and the span has no valid trace id and span id "
                           "to name the request by")
    return f"{trace_id.hex()}-{span_id.hex()}"


def _end_time(nanos: int) -> str:
    if not nanos:
        raise SpanRejected("the span has no end time (end_time_unix_nano is 0)")
    try:
        at = _EPOCH + timedelta(microseconds=nanos // 1000)
    except OverflowError:
        raise SpanRejected(f"end_time_unix_nano {nanos} is not a time") from None
    return at.isoformat().replace("+00:00", "Z")


def _endpoint(attributes: dict[str, AnyValue]) -> str | None:
    if _string(attributes, "gen_ai.operation.name") != "chat":
        return None
    api = _string(attributes, "openai.api.type")
    if api == "responses":
        return "responses"
    if api is None and _string(attributes, "gen_ai.provider.name", "gen_ai.system") == "anthropic":
        return "messages"
    return "chat.completions"


def _tags(attributes: dict[str, AnyValue], resource: dict[str, AnyValue]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for name, keys in TAG_SOURCES.items():
        value = _string(attributes, *keys) or _string(resource, *keys)
        if value is not None and len(value) <= _MAX_TAG_VALUE:
            tags[name] = value
    for source in (resource, attributes):  # the span's own tags win over its resource's
        for key, value in source.items():
            if key.startswith(TAG_PREFIX):
                tags[key[len(TAG_PREFIX):]] = _tag_value(key, value)
    return tags


def _tag_value(key: str, value: AnyValue) -> str:
    kind = _kind(value)
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind in ("int_value", "double_value"):
        return str(getattr(value, kind))
    raise SpanRejected(f"{key} must be a string attribute, got {kind}")


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
