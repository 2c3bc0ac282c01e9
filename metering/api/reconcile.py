"""POST /v1/reconcile (admin): an upstream provider's usage report against the ledger."""

from __future__ import annotations

from typing import Annotated, Any

import anyio
import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from metering import reconcile as rc
from metering.api.deps import Admin, Ctx
from metering.api.usage import read_body
from metering.errors import BadRequest
from metering.services.reconcile import reconcile

router = APIRouter(tags=["reports"])
_PAGE: dict[str, Any] = {"type": "object", "description": "one page as the provider's admin API returns it"}


def decode_report(body: bytes) -> Any:
    if not body.strip():
        raise BadRequest("body: empty; send the provider's usage report (one page, or a JSON array of pages)")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body: not valid JSON: {exc}") from None


@router.post(
    "/v1/reconcile",
    summary="The provider's usage report against the ledger, per UTC day x model: match or drift",
    description=(
        "Body: the usage report exactly as the provider's admin API returns it, one page or a JSON array of "
        f"pages: OpenAI `{rc.ENDPOINTS['openai']}` (bucket_width 1d or 1h, group_by=model) or Anthropic "
        f"`{rc.ENDPOINTS['anthropic']}` (bucket_width 1d or 1h, group_by[]=model). Tolerance: {rc.TOLERANCE_RULE}."
    ),
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"oneOf": [_PAGE, {"type": "array", "items": _PAGE}]}}}}},
)
async def post_reconcile(
    request: Request, _: Admin, ctx: Ctx,
    provider: Annotated[str, Query(description="openai | anthropic")],
    start: Annotated[str, Query(description="UTC date, inclusive (YYYY-MM-DD)")],
    end: Annotated[str, Query(description="UTC date, exclusive")],
    tolerance: Annotated[str | None, Query(description="relative, e.g. 0.001 for 0.1% (default 0: exact)")] = None,
    format: Annotated[str, Query(description="json | csv | xlsx")] = "json",
    models: Annotated[str | None, Query(description="comma list: compare only these models")] = None,
    split_by: Annotated[str | None, Query(description="also split by the provider's project_id / workspace_id / "
                                                      "api_key_id (the report must be grouped by it)")] = None,
    match_to: Annotated[str | None, Query(description="our side of split_by: api_key_id (default) or tag:NAME")]
    = None,
    map: Annotated[list[str] | None, Query(description="PROVIDER_ID=OUR_VALUE, repeated or comma-separated")] = None,
) -> Response:
    fmt = rc.parse_format(format)
    rc.parse_provider(provider)
    rc.parse_range(start, end)
    rc.parse_tolerance(tolerance)
    body = await read_body(request)
    report = decode_report(body)

    def run() -> dict[str, Any]:
        return reconcile(ctx, provider=provider, report=report, start=start, end=end, tolerance=tolerance,
                         models=models, split_by=split_by, match_to=match_to, mapping=map)

    result = await anyio.to_thread.run_sync(run)
    headers = {} if fmt == "json" else {
        "Content-Disposition": f'attachment; filename="reconcile-{provider}-{start}-{end}.{fmt}"'}
    return Response(rc.render(result, fmt), media_type=rc.MEDIA_TYPES[fmt], headers=headers)
