"""Finance reports (admin): daily, statement, FOCUS; and re-rating."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict

from metering.api.deps import Admin, Ctx
from metering.services import reports, reprice
from metering.services.documents import MEDIA_TYPES, Document, check_format, render

router = APIRouter(tags=["reports"])


def _document(doc: Document, fmt: str, filename: str) -> Response:
    body = render(doc, fmt)
    filename = re.sub(r"[^A-Za-z0-9._-]", "_", filename)[:150]  # names come from data: keep the header plain
    headers = {} if fmt == "json" else {"Content-Disposition": f'attachment; filename="{filename}.{fmt}"'}
    return Response(body, media_type=MEDIA_TYPES[fmt], headers=headers)


@router.get("/v1/reports/daily", summary="Daily cost report: one row per local day and group, and a totals row")
def daily(
    request: Request, principal: Admin, ctx: Ctx,
    start: Annotated[str | None, Query(description="local date, inclusive (default: 29 days ago)")] = None,
    end: Annotated[str | None, Query(description="local date, exclusive (default: tomorrow)")] = None,
    tz: str = "UTC",
    group_by: Annotated[str, Query(description="comma list of account_id, api_key_id, model, endpoint, tag:NAME")]
    = reports.DEFAULT_DAILY_GROUP,
    format: Annotated[str, Query(description="json | csv | parquet | xlsx")] = "json",
) -> Response:
    fmt = check_format(format, reports.DAILY_FORMATS)
    with request.app.state.limiter.slot(principal):
        doc = reports.daily_report(reports.LedgerSource(ctx), now=ctx.now(), start=start, end=end, tz=tz,
                                   group_by=group_by)
    return _document(doc, fmt, f"daily-{doc.meta['start']}-{doc.meta['end']}")


@router.get("/v1/reports/statement", summary="Monthly statement of one account, rounded to cents by a stated rule")
def statement(
    request: Request, principal: Admin, ctx: Ctx,
    account: Annotated[str, Query(description="account_id (or 'unassigned')", max_length=200)],
    month: Annotated[str, Query(description="YYYY-MM, a month of the billing time zone")],
    tz: Annotated[str | None, Query(description="default: the billing time zone (METERING_BILLING_TZ); another "
                                                "zone gives a usage view, not a billing document")] = None,
    format: Annotated[str, Query(description="json | csv | xlsx")] = "json",
) -> Response:
    fmt = check_format(format, reports.STATEMENT_FORMATS)
    with request.app.state.limiter.slot(principal):
        doc = reports.statement(reports.LedgerSource(ctx), account=account, month=month, tz=tz)
    return _document(doc, fmt, f"statement-{account}-{doc.meta['month']}")


@router.get("/v1/reports/focus", summary="FOCUS 1.2 cost and usage export (days of the billing time zone)")
def focus(
    request: Request, principal: Admin, ctx: Ctx,
    start: Annotated[str, Query(description="date of the billing time zone (default UTC), inclusive")],
    end: Annotated[str, Query(description="date, exclusive")],
    format: Annotated[str, Query(description="csv | parquet")] = "csv",
) -> Response:
    fmt = check_format(format, reports.FOCUS_FORMATS)
    with request.app.state.limiter.slot(principal):
        doc = reports.focus_export(reports.LedgerSource(ctx), start=start, end=end)
    return _document(doc, fmt, f"focus-{doc.meta['start']}-{doc.meta['end']}")


class RepriceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: str
    end: str
    tz: str = "UTC"
    dry_run: bool = False


@router.post("/v1/reprice", summary="Re-rate a range with the current rate card (dry_run: show the change only)")
def post_reprice(request: Request, body: RepriceRequest, principal: Admin, ctx: Ctx) -> JSONResponse:
    with request.app.state.limiter.slot(principal):
        return JSONResponse(reprice.reprice(ctx, start=body.start, end=body.end, tz=body.tz, dry_run=body.dry_run))


@router.get("/v1/reprice", summary="The audit trail of applied re-ratings")
def get_reprice_runs(_: Admin, ctx: Ctx) -> dict[str, Any]:
    return {"data": reprice.runs(ctx)}
