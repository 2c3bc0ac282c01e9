"""Finance reports (admin): daily, statement, FOCUS; and re-rating."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict

from metering import reports
from metering.api.auth import ADMIN, Principal, require
from metering.service import reprice, reprice_runs

router = APIRouter(tags=["reports"])
Admin = Annotated[Principal, Depends(require(ADMIN))]


def _document(doc: reports.Document, fmt: str, filename: str) -> Response:
    body = reports.render(doc, fmt)
    headers = {} if fmt == "json" else {"Content-Disposition": f'attachment; filename="{filename}.{fmt}"'}
    return Response(body, media_type=reports.MEDIA_TYPES[fmt], headers=headers)


@router.get("/v1/reports/daily", summary="Daily cost report: one row per local day and group, and a totals row")
def daily(
    request: Request, _: Admin,
    start: Annotated[str | None, Query(description="local date, inclusive (default: 29 days ago)")] = None,
    end: Annotated[str | None, Query(description="local date, exclusive (default: tomorrow)")] = None,
    tz: str = "UTC",
    group_by: Annotated[str, Query(description="comma list of account_id, api_key_id, model, endpoint, tag:NAME")]
    = reports.DEFAULT_DAILY_GROUP,
    format: Annotated[str, Query(description="json | csv | parquet | xlsx")] = "json",
) -> Response:
    fmt = reports.check_format(format, reports.DAILY_FORMATS)
    doc = reports.daily_report(request.app.state.store, start=start, end=end, tz=tz, group_by=group_by)
    return _document(doc, fmt, f"daily-{doc.meta['start']}-{doc.meta['end']}")


@router.get("/v1/reports/statement", summary="Monthly statement of one account, rounded to cents by a stated rule")
def statement(
    request: Request, _: Admin,
    account: Annotated[str, Query(description="account_id (or 'unassigned')")],
    month: Annotated[str, Query(description="YYYY-MM")],
    tz: str = "UTC",
    format: Annotated[str, Query(description="json | csv | xlsx")] = "json",
) -> Response:
    fmt = reports.check_format(format, reports.STATEMENT_FORMATS)
    doc = reports.statement(request.app.state.store, account=account, month=month, tz=tz)
    return _document(doc, fmt, f"statement-{account}-{doc.meta['month']}")


@router.get("/v1/reports/focus", summary="FOCUS 1.2 cost and usage export (UTC days)")
def focus(
    request: Request, _: Admin,
    start: Annotated[str, Query(description="UTC date, inclusive")],
    end: Annotated[str, Query(description="UTC date, exclusive")],
    format: Annotated[str, Query(description="csv | parquet")] = "csv",
) -> Response:
    fmt = reports.check_format(format, reports.FOCUS_FORMATS)
    doc = reports.focus_export(request.app.state.store, start=start, end=end)
    return _document(doc, fmt, f"focus-{doc.meta['start']}-{doc.meta['end']}")


class RepriceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: str
    end: str
    tz: str = "UTC"
    dry_run: bool = False


@router.post("/v1/reprice", summary="Re-rate a range with the current rate card (dry_run: show the change only)")
def post_reprice(request: Request, body: RepriceRequest, _: Admin) -> JSONResponse:
    result = reprice(request.app.state.store, start=body.start, end=body.end, tz=body.tz, dry_run=body.dry_run)
    return JSONResponse(result)


@router.get("/v1/reprice", summary="The audit trail of applied re-ratings")
def get_reprice_runs(request: Request, _: Admin) -> dict[str, Any]:
    return {"data": reprice_runs(request.app.state.store)}
