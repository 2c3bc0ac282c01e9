"""POST /v1/traces: OpenTelemetry trace export (OTLP/HTTP), its GenAI usage spans metered.

The conversion is metering.otlp's; the records go down the same ingest path as POST /v1/usage.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from metering import otlp
from metering.api.auth import ADMIN, INGEST, Principal, require
from metering.api.deps import Ctx
from metering.api.usage import THREAD_BODY_BYTES, ingest_items, read_body
from metering.services.ingest import MAX_BODY_BYTES, MAX_RECORDS

router = APIRouter(tags=["usage"])

_PARTIAL = {"type": "object", "properties": {
    "partialSuccess": {"type": "object", "properties": {
        "rejectedSpans": {"type": "string", "description": "int64, as OTLP/JSON writes it"},
        "errorMessage": {"type": "string"}}}}}


@router.post(
    "/v1/traces",
    summary="Ingest OpenTelemetry spans (OTLP/HTTP, protobuf or JSON): each GenAI usage span becomes a usage record",
    description=(
        "The body is an OTLP `ExportTraceServiceRequest`, as an OpenTelemetry SDK's OTLP/HTTP exporter sends it "
        "(`Content-Encoding: gzip` or `deflate` allowed). A span with `gen_ai.usage.*` attributes becomes a record: "
        "request_id = `gen_ai.response.id` (else `<trace id>-<span id>`), occurred_at = the span's end, model = "
        "`gen_ai.response.model` (else `gen_ai.request.model`), api_key_id = `metering.api_key_id` (span, else "
        "resource). Spans without usage are ignored. The answer is OTLP's `ExportTraceServiceResponse` in the "
        "request's encoding, with `partial_success` naming the spans rejected and why; a span exported again is a "
        "duplicate and stored once."
    ),
    responses={
        200: {"description": "ExportTraceServiceResponse", "content": {
            "application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
            "application/json": {"schema": _PARTIAL}}},
        415: {"description": "not an OTLP encoding (Content-Type or Content-Encoding)"},
    },
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/x-protobuf": {"schema": {"type": "string", "format": "binary",
                                              "description": "ExportTraceServiceRequest, binary protobuf"}},
        "application/json": {"schema": {"type": "object", "description": "ExportTraceServiceRequest, OTLP/JSON",
                                        "properties": {"resourceSpans": {"type": "array", "items": {"type": "object"}}}}},
    }}},
    response_class=Response,
)
async def post_traces(request: Request, _: Annotated[Principal, Depends(require(ADMIN, INGEST))],
                      ctx: Ctx) -> Response:
    media = otlp.media_type(request.headers.get("content-type"))  # before the body is read: 415 at once
    body = await read_body(request)
    converted = otlp.Converted()

    def decode() -> list[dict[str, Any]]:
        nonlocal converted
        converted = otlp.convert(body, content_type=media, content_encoding=request.headers.get("content-encoding"),
                                 limit=MAX_BODY_BYTES, max_records=MAX_RECORDS)
        return converted.records

    result = await ingest_items(ctx, decode, offload=len(body) > THREAD_BODY_BYTES)
    if converted.rejected and ctx.metrics is not None:  # usage spans that could not become records
        ctx.metrics.ingested(accepted=0, duplicates=0, rejected=len(converted.rejected))
    rejections = converted.rejected + [(converted.sources[error["index"]], otlp.record_error(error))
                                       for error in result["errors"]]
    return Response(otlp.export_response(rejections, spans=converted.spans, media=media), media_type=media)
