"""POST /v1/usage (ingest), GET /v1/usage (the per-key usage API), GET /v1/unpriced."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from metering.api.auth import ADMIN, INGEST, KEY, Principal, require
from metering.errors import PayloadTooLarge, RequestTimeout
from metering.ingest import MAX_BODY_BYTES, Parsed, decode_body, is_ndjson, parse_items, summarize
from metering.pricing import usd_string
from metering.records import ENDPOINTS, MAX_STRING, MAX_TAG_VALUE, MAX_TAGS, MAX_TOKENS, TOKEN_FIELDS
from metering.store import queries
from metering.timewindows import cut, default_range, parse_bound, zone

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
async def post_usage(request: Request, _: Annotated[Principal, Depends(require(ADMIN, INGEST))]) -> JSONResponse:
    store = request.app.state.store
    body = await read_body(request)
    ndjson = is_ndjson(request.headers.get("content-type"))

    def parse() -> Parsed:
        return parse_items(decode_body(body, ndjson=ndjson), now=store.clock())

    # A large body takes milliseconds to check: off the event loop, so other requests (reads, the
    # gateway's budget checks) are not held up behind it.
    parsed = await anyio.to_thread.run_sync(parse) if len(body) > THREAD_BODY_BYTES else parse()
    outcomes = await asyncio.wrap_future(store.writer.submit_ingest(parsed.batch)) if parsed.count else []
    result = summarize(parsed, outcomes)
    return JSONResponse(result, status_code=422 if result["rejected"] else 200)


def _money(row_cost: int, row_list: int) -> dict[str, str]:
    return {"cost": usd_string(row_cost), "list_cost": usd_string(row_list)}


@router.get("/v1/usage", summary="Usage and cost per time bucket and group")
def get_usage(
    request: Request,
    principal: Annotated[Principal, Depends(require(ADMIN, KEY))],
    start: Annotated[str | None, Query(description="date (local midnight in tz) or RFC 3339 timestamp; inclusive")] = None,
    end: Annotated[str | None, Query(description="date or timestamp; exclusive")] = None,
    bucket: Annotated[str, Query(description="hour | day | month")] = "day",
    group_by: Annotated[str | None, Query(description="comma list of model, endpoint, api_key_id, tag:NAME")] = None,
    tz: Annotated[str, Query(description="IANA time zone of the buckets")] = "UTC",
    api_key_id: Annotated[str | None, Query(description="admin only; a key always sees itself")] = None,
) -> dict[str, Any]:
    store = request.app.state.store
    key_filter = principal.visible_key(api_key_id)
    zone_info = zone(tz)
    default_start, default_end = default_range(store.clock(), zone_info)
    start_at = parse_bound(start, zone_info, "start") if start else default_start
    end_at = parse_bound(end, zone_info, "end") if end else default_end
    buckets = cut(start_at, end_at, bucket, zone_info)
    groups = queries.GroupBy.parse(group_by)
    with store.reading() as cur:
        rows = queries.usage(cur, buckets=buckets, group_by=groups, api_key_id=key_filter)

    results: list[list[dict[str, Any]]] = [[] for _ in buckets]
    totals = dict.fromkeys(queries.COUNT_FIELDS, 0)
    total_cost = total_list = 0
    for row in rows:
        results[row.bucket].append({**row.group, **row.counts, **_money(row.cost_pico, row.list_cost_pico)})
        for name, value in row.counts.items():
            totals[name] += value
        total_cost += row.cost_pico
        total_list += row.list_cost_pico
    return {
        "currency": "USD",
        "tz": tz,
        "bucket": bucket,
        "group_by": list(groups.fields),
        "buckets": [
            {"start": b_start.astimezone(zone_info).isoformat(), "end": b_end.astimezone(zone_info).isoformat(),
             "results": results[i]}
            for i, (b_start, b_end) in enumerate(buckets)
        ],
        "totals": {**totals, **_money(total_cost, total_list)},
    }


@router.get("/v1/unpriced", summary="Models with usage the rate card does not price")
def get_unpriced(request: Request, _: Annotated[Principal, Depends(require(ADMIN))]) -> dict[str, Any]:
    with request.app.state.store.reading() as cur:
        models = queries.unpriced(cur)
    for entry in models:
        entry["first_bucket"] = entry["first_bucket"].isoformat() + "Z"
        entry["last_bucket"] = entry["last_bucket"].isoformat() + "Z"
    return {"data": models, "total_requests": sum(m["requests"] for m in models)}


