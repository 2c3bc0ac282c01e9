"""POST /v1/usage (ingest), GET /v1/usage (the per-key usage API), GET /v1/unpriced."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from metering.access import Principal
from metering.api.auth import ADMIN, INGEST, require
from metering.api.deps import Admin, AdminOrKey, Ctx
from metering.errors import PayloadTooLarge, RequestTimeout
from metering.records import ENDPOINTS, MAX_STRING, MAX_TAG_VALUE, MAX_TAGS, MAX_TOKENS, TOKEN_FIELDS
from metering.services import ingest, overview
from metering.services import usage as service
from metering.services.context import Context
from metering.services.ingest import MAX_BODY_BYTES, Parsed, decode_body, is_ndjson, summarize

router = APIRouter(tags=["usage"])
THREAD_BODY_BYTES = 32 * 1024
_COUNT = {"type": "integer", "minimum": 0, "maximum": MAX_TOKENS}
_STRING = {"type": "string", "minLength": 1, "maxLength": MAX_STRING}
# The canonical record, for the API's documentation (the rules themselves live in metering.records).
RECORD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["request_id", "occurred_at", "api_key_id", "model", "input_tokens", "output_tokens"],
    "properties": {
        "request_id": _STRING, "occurred_at": {"type": "string", "format": "date-time"},
        "api_key_id": _STRING, "model": _STRING, "endpoint": {"type": "string", "enum": list(ENDPOINTS)},
        **dict.fromkeys(TOKEN_FIELDS, _COUNT), "thinking_tokens": {**_COUNT, "nullable": True},
        "tags": {"type": "object", "additionalProperties": {"type": "string", "maxLength": MAX_TAG_VALUE},
                 "maxProperties": MAX_TAGS},
        "usage": {"type": "object", "description": "the endpoint's native usage object, instead of the token fields"},
    },
}


async def read_body(request: Request) -> bytes:
    """The body, within the size limit and the time limit (a client trickling a body, by accident
    or on purpose, gets a 408 and its connection back, and holds nothing else up meanwhile)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"the body is {declared} bytes; at most {MAX_BODY_BYTES} bytes (10 MiB) per request")
    timeout = request.app.state.settings.body_timeout
    chunks, size = [], 0
    try:
        with anyio.fail_after(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise PayloadTooLarge(f"the body exceeds {MAX_BODY_BYTES} bytes (10 MiB)")
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout(f"the body did not arrive within {timeout:g} s ({size} bytes came); nothing was "
                             "stored") from None
    return b"".join(chunks)


@router.post(
    "/v1/usage",
    summary="Ingest usage records: one JSON object, a JSON array, or NDJSON",
    responses={422: {"description": "some records were rejected; the others were stored"}},
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"oneOf": [RECORD_SCHEMA, {"type": "array", "items": RECORD_SCHEMA}]}},
        "application/x-ndjson": {"schema": {"type": "string", "description": "one record per line"}},
    }}},
)
async def post_usage(request: Request, _: Annotated[Principal, Depends(require(ADMIN, INGEST))],
                     ctx: Ctx) -> JSONResponse:
    body = await read_body(request)
    ndjson = is_ndjson(request.headers.get("content-type"))
    result = await ingest_items(ctx, lambda: decode_body(body, ndjson=ndjson), offload=len(body) > THREAD_BODY_BYTES)
    return JSONResponse(result, status_code=422 if result["rejected"] else 200)


async def ingest_items(ctx: Context, decode: Callable[[], list[Any]], *, offload: bool) -> dict[str, Any]:
    """The ingest path of every route that takes usage (POST /v1/usage, POST /v1/traces): `decode()`
    gives the body's items, which are checked and priced (services.ingest), stored through the one
    writer (durable when this returns) and summed up as POST /v1/usage answers."""

    def prepare() -> Parsed:
        return ingest.prepare(ctx, decode())

    # A large body takes milliseconds to check: off the event loop, so other requests (reads, the
    # gateway's budget checks) are not held up behind it.
    parsed = await anyio.to_thread.run_sync(prepare) if offload else prepare()
    outcomes = await asyncio.wrap_future(ingest.submit(ctx, parsed)) if parsed.count else []
    result = summarize(parsed, outcomes)
    if ctx.metrics is not None:
        ctx.metrics.ingested(accepted=result["accepted"], duplicates=result["duplicates"], rejected=result["rejected"])
    return result


@router.get("/v1/usage", summary="Usage and cost per time bucket and group")
def get_usage(
    request: Request,
    principal: AdminOrKey,
    ctx: Ctx,
    start: Annotated[str | None, Query(description="date (local midnight in tz) or RFC 3339 timestamp; inclusive; "
                                                   "2000-01-01 to 2100-01-01", max_length=64,
                                       examples=["2026-11-01", "0001-01-01", "9999-12-30"])] = None,
    end: Annotated[str | None, Query(description="date or timestamp; exclusive", max_length=64,
                                     examples=["2026-12-01", "2101-01-01"])] = None,
    bucket: Annotated[str, Query(description="hour | day | month", examples=["day", "month", "week"])] = "day",
    group_by: Annotated[str | None, Query(description="comma list of at most 8 of model, endpoint, api_key_id, "
                                                      "account_id, tag:NAME",
                                          examples=["model", ",".join(f"tag:t{i}" for i in range(20))])] = None,
    tz: Annotated[str, Query(description="IANA time zone of the buckets",
                             examples=["UTC", "Asia/Kolkata", "America", "__pycache__"])] = "UTC",
    api_key_id: Annotated[str | None, Query(description="admin only; a key always sees itself")] = None,
) -> dict[str, Any]:
    with request.app.state.limiter.slot(principal):
        return service.usage(ctx, principal=principal, start=start, end=end, bucket=bucket, group_by=group_by,
                             tz=tz, api_key_id=api_key_id)


@router.get("/v1/overview", summary="A period's spend, cost per token class, cache savings, top keys and models, "
                                   "and the month's projection (every figure computed on the server)")
def get_overview(
    request: Request, principal: AdminOrKey, ctx: Ctx,
    start: Annotated[str | None, Query(description="date or timestamp, inclusive (default: this month)",
                                       max_length=64)] = None,
    end: Annotated[str | None, Query(description="date or timestamp, exclusive (default: tomorrow)",
                                     max_length=64)] = None,
    tz: Annotated[str, Query(description="IANA time zone of the days")] = "UTC",
    api_key_id: Annotated[str | None, Query(description="admin only; a key always sees itself")] = None,
) -> dict[str, Any]:
    with request.app.state.limiter.slot(principal):
        return overview.overview(ctx, principal=principal, start=start, end=end, tz=tz, api_key_id=api_key_id)


@router.get("/v1/unpriced", summary="Models with usage the rate card does not price")
def get_unpriced(_: Admin, ctx: Ctx) -> dict[str, Any]:
    return service.unpriced(ctx)


@router.get("/v1/records/{request_id}", summary="One stored record, its rate version and its cost per token class")
def get_record(request_id: str, principal: AdminOrKey, ctx: Ctx) -> dict[str, Any]:
    return service.record(ctx, request_id=request_id, principal=principal)
