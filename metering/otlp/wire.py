"""OTLP/HTTP wire formats: media types, compression, and the spans of an ExportTraceServiceRequest
read from binary protobuf or OTLP/JSON into one form (SpanData). Pure."""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from metering.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

PROTOBUF, JSON = "application/x-protobuf", "application/json"
_MEDIA_TYPES = {"application/x-protobuf": PROTOBUF, "application/protobuf": PROTOBUF, "application/json": JSON}


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


# --- the spans of a request, in one form for both encodings ------------------------------------------


class Other:
    """An attribute value of a kind no rule reads as a scalar: array, kvlist, bytes, or empty."""

    __slots__ = ("kind",)

    def __init__(self, kind: str) -> None:
        self.kind = kind


@dataclass(frozen=True, slots=True)
class SpanData:
    """What the mapping reads of a span. Ids in lower-case hex ('' when absent); attribute values
    as Python scalars (str, int, float, bool) or Other."""

    trace_id: str
    span_id: str
    name: str
    end_time_unix_nano: int
    attributes: dict[str, Any]


Resources = Iterable[tuple[dict[str, Any], Iterable[SpanData]]]  # each resource's attributes and spans


def decode_protobuf(body: bytes) -> Resources:
    message = ExportTraceServiceRequest()
    try:
        message.ParseFromString(body)
    except DecodeError as exc:
        raise BadRequest(f"the body is not an OTLP ExportTraceServiceRequest in protobuf ({exc})") from None
    return protobuf_spans(message)


def protobuf_spans(message: ExportTraceServiceRequest) -> Resources:
    for resource_spans in message.resource_spans:
        spans = (SpanData(span.trace_id.hex(), span.span_id.hex(), span.name, span.end_time_unix_nano,
                          _pb_attributes(span.attributes))
                 for scope_spans in resource_spans.scope_spans for span in scope_spans.spans)
        yield _pb_attributes(resource_spans.resource.attributes), spans


_SCALARS = frozenset({"string_value", "int_value", "double_value", "bool_value"})


def _pb_attributes(pairs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in pairs:
        value = kv.value
        kind = value.WhichOneof("value")
        out[kv.key] = getattr(value, kind) if kind in _SCALARS else Other(kind or "empty")
    return out


def decode_json(body: bytes) -> Resources:
    """OTLP/JSON: protobuf's JSON mapping with ids in hex and enums as integers; unknown fields
    are ignored. Read directly (protobuf's json_format is pure Python and six times slower), and
    eagerly, so that a malformed body is refused whole before anything is stored."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object: an OTLP ExportTraceServiceRequest ({\"resourceSpans\": [...]})")
    out = []
    for r, resource_spans in enumerate(_json_list(data, "resourceSpans", "")):
        path = f"resourceSpans[{r}]"
        resource = _json_object(resource_spans, "resource", path)
        spans = []
        for s, scope_spans in enumerate(_json_list(resource_spans, "scopeSpans", path)):
            for i, span in enumerate(_json_list(scope_spans, "spans", f"{path}.scopeSpans[{s}]")):
                where = f"{path}.scopeSpans[{s}].spans[{i}]"
                spans.append(SpanData(_json_id(span, "traceId", where), _json_id(span, "spanId", where),
                                      _json_string(span, "name", where), _json_uint64(span, "endTimeUnixNano", where),
                                      _json_attributes(span, where)))
        out.append((_json_attributes(resource, f"{path}.resource"), spans))
    return out


def _snake(key: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in key)


def _json_get(obj: Any, key: str, path: str) -> Any:
    """A field by its lowerCamelCase name (the specification's), or its proto name as some senders write it."""
    if not isinstance(obj, dict):
        raise BadRequest(f"{path or 'the body'} must be a JSON object")
    value = obj.get(key)
    return obj.get(_snake(key)) if value is None else value


def _json_list(obj: Any, key: str, path: str) -> list[Any]:
    value = _json_get(obj, key, path)
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRequest(f"{path + '.' if path else ''}{key} must be an array")
    return value


def _json_object(obj: Any, key: str, path: str) -> dict[str, Any]:
    value = _json_get(obj, key, path)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{path}.{key} must be a JSON object")
    return value


def _json_string(obj: Any, key: str, path: str) -> str:
    value = _json_get(obj, key, path)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadRequest(f"{path}.{key} must be a string")
    return value


def _json_id(obj: Any, key: str, path: str) -> str:
    value = _json_get(obj, key, path)
    if value is None or value == "":
        return ""
    try:
        if not isinstance(value, str):
            raise ValueError
        return bytes.fromhex(value).hex()
    except ValueError:
        raise BadRequest(f"{path}.{key} must be a hex string (OTLP/JSON encodes trace and span ids as hex, "
                         f"not base64), got {str(value)[:60]!r}") from None


def _json_uint64(obj: Any, key: str, path: str) -> int:
    """A fixed64: a decimal string (as OTLP/JSON writes 64-bit integers) or a number."""
    value = _json_get(obj, key, path)
    number = _json_int(value)
    if value is not None and (number is None or not 0 <= number < 2**64):
        raise BadRequest(f"{path}.{key} must be an unsigned 64-bit integer, got {str(value)[:40]!r}")
    return number or 0


def _json_int(value: Any) -> int | None:
    if type(value) is int:
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


_JSON_SPECIAL = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _json_attributes(obj: Any, path: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for j, kv in enumerate(_json_list(obj, "attributes", path)):
        where = f"{path}.attributes[{j}]"
        key = _json_get(kv, "key", where)
        if not isinstance(key, str):
            raise BadRequest(f"{where}.key must be a string")
        out[key] = _json_value(_json_object(kv, "value", where), f"{where}.value")
    return out


def _json_value(value: dict[str, Any], path: str) -> Any:
    for name, item in value.items():
        if item is None:
            continue
        if name in ("stringValue", "string_value"):
            if not isinstance(item, str):
                raise BadRequest(f"{path}.stringValue must be a string")
            return item
        if name in ("intValue", "int_value"):
            number = _json_int(item)
            if number is None or not -(2**63) <= number < 2**63:
                raise BadRequest(f"{path}.intValue must be a 64-bit integer, got {str(item)[:40]!r}")
            return number
        if name in ("doubleValue", "double_value"):
            if isinstance(item, str) and item in _JSON_SPECIAL:
                return _JSON_SPECIAL[item]
            if isinstance(item, bool) or not isinstance(item, int | float):
                raise BadRequest(f"{path}.doubleValue must be a number, got {str(item)[:40]!r}")
            return float(item)
        if name in ("boolValue", "bool_value"):
            if not isinstance(item, bool):
                raise BadRequest(f"{path}.boolValue must be true or false")
            return item
        if name in ("arrayValue", "array_value", "kvlistValue", "kvlist_value", "bytesValue", "bytes_value"):
            return Other(_snake(name))
    return Other("empty")
