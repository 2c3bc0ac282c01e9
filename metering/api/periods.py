"""Billing periods (admin): close a month, list the closed ones."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from metering.api.deps import Admin, Ctx
from metering.services import periods

router = APIRouter(tags=["reports"])


class CloseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    month: str = Field(description="YYYY-MM, a month of the billing time zone (METERING_BILLING_TZ) that has ended",
                       max_length=16, examples=["2026-10"])


@router.post("/v1/periods/close", summary="Close a billing month: store its statements and FOCUS rows for good",
             description="Months close in order, once ended. Closing a closed month again changes nothing "
                         "(`closed_now`: false). Late usage of a closed month is billed on the first open month as "
                         "corrections.")
def post_close(request: Request, body: CloseRequest, principal: Admin, ctx: Ctx) -> dict[str, Any]:
    with request.app.state.limiter.slot(principal):
        return periods.close(ctx, month=body.month, by="api")


@router.get("/v1/periods", summary="The closed billing months, the first open one, and the next to close")
def get_periods(_: Admin, ctx: Ctx) -> dict[str, Any]:
    return periods.list_periods(ctx)
