"""Budgets (admin manages them; a key reads those that cover it, as CONTRACT.md "What a key sees"
says), the status check for the gateway, on-demand evaluation, and the alert list."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from metering.api.auth import ADMIN, INGEST, KEY, Principal, require
from metering.api.deps import Admin, AdminOrKey, Ctx
from metering.services import alerts, budgets

router = APIRouter(tags=["budgets"])
StatusReader = Annotated[Principal, Depends(require(ADMIN, INGEST, KEY))]

_EXAMPLE = {"scope": {"api_key_id": "key-a"}, "period": "month", "tz": "UTC", "amount": "100.00", "basis": "cost",
            "thresholds": [0.5, 0.8, 1.0], "forecast": True, "webhook_url": "https://example.test/hooks"}


@router.post("/v1/budgets", status_code=201, summary="Create a budget")
def create_budget(_: Admin, ctx: Ctx, body: Annotated[dict[str, Any], Body(examples=[_EXAMPLE])]) -> JSONResponse:
    return JSONResponse(budgets.create(ctx, body=body), status_code=201)


@router.get("/v1/budgets", summary="Budgets (a key sees those that cover it)")
def list_budgets(principal: AdminOrKey, ctx: Ctx) -> dict[str, Any]:
    return {"data": budgets.list_budgets(ctx, principal=principal)}


@router.get("/v1/budgets/status", summary="Every budget covering a key: spent, remaining, projection, exceeded")
def budget_status(principal: StatusReader, ctx: Ctx,
                  api_key_id: Annotated[str | None, Query(description="admin and ingest: required; a key: itself",
                                                          max_length=200)] = None) -> dict[str, Any]:
    return budgets.key_status(ctx, api_key_id=api_key_id, principal=principal)


@router.post("/v1/budgets/check", summary="Evaluate every budget now and send what is due")
def check_budgets(request: Request, _: Admin, ctx: Ctx) -> dict[str, Any]:
    written = alerts.evaluate_now(ctx)
    request.app.state.sender.wake()
    return {"alerts_written": written}


@router.get("/v1/budgets/{budget_id}", summary="One budget")
def get_budget(budget_id: str, principal: AdminOrKey, ctx: Ctx) -> dict[str, Any]:
    return budgets.get_budget(ctx, budget_id=budget_id, principal=principal)


@router.get("/v1/budgets/{budget_id}/status", summary="One budget's period, spend and projection")
def one_budget_status(budget_id: str, principal: AdminOrKey, ctx: Ctx) -> dict[str, Any]:
    return budgets.budget_status(ctx, budget_id=budget_id, principal=principal)


@router.delete("/v1/budgets/{budget_id}", status_code=204, summary="Delete a budget")
def delete_budget(budget_id: str, _: Admin, ctx: Ctx) -> Response:
    budgets.delete(ctx, budget_id=budget_id)
    return Response(status_code=204)


@router.get("/v1/alerts", summary="Alerts with their delivery status and attempts")
def list_alerts(principal: AdminOrKey, ctx: Ctx) -> dict[str, Any]:
    return {"data": alerts.list_alerts(ctx, principal=principal)}
