"""Budgets (admin to manage; a key reads those covering it), the status check for the gateway,
on-demand evaluation, and the alert list with delivery attempts."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from metering import alerts
from metering.api.auth import ADMIN, KEY, Principal, require
from metering.errors import BadRequest, Forbidden
from metering.webhooks import evaluate_now

router = APIRouter(tags=["budgets"])
Admin = Annotated[Principal, Depends(require(ADMIN))]
AdminOrKey = Annotated[Principal, Depends(require(ADMIN, KEY))]

_EXAMPLE = {"scope": {"api_key_id": "key-a"}, "period": "month", "tz": "UTC", "amount": "100.00", "basis": "cost",
            "thresholds": [0.5, 0.8, 1.0], "forecast": True, "webhook_url": "https://example.test/hooks"}


def _covering(store: Any, principal: Principal, budgets: list[alerts.Budget]) -> list[alerts.Budget]:
    if principal.role == ADMIN:
        return budgets
    key = principal.key
    assert key is not None
    return [b for b in budgets if b.scope.covers(api_key_id=key.api_key_id, account_id=key.account_id)]


@router.post("/v1/budgets", status_code=201, summary="Create a budget")
def create_budget(request: Request, _: Admin,
                  body: Annotated[dict[str, Any], Body(examples=[_EXAMPLE])]) -> JSONResponse:
    store = request.app.state.store
    values = alerts.validate(body, allow_link_local=request.app.state.settings.webhook_allow_link_local)
    budget = store.writer.call(lambda con: alerts.create(con, values, now=store.clock()))
    out = budget.as_json()
    if "webhook_secret" not in body and budget.webhook_secret:
        out["webhook_secret"] = budget.webhook_secret  # generated: shown once, keep it to verify signatures
    return JSONResponse(out, status_code=201)


@router.get("/v1/budgets", summary="Budgets (a key sees those that cover it)")
def list_budgets(request: Request, principal: AdminOrKey) -> dict[str, Any]:
    store = request.app.state.store
    with store.reading() as cur:
        budgets = alerts.active(cur)
    return {"data": [b.as_json() for b in _covering(store, principal, budgets)]}


@router.get("/v1/budgets/status", summary="Every budget covering a key: spent, remaining, projection, exceeded")
def budget_status(request: Request, principal: AdminOrKey,
                  api_key_id: Annotated[str | None, Query(description="admin: required; a key: itself")] = None
                  ) -> dict[str, Any]:
    store = request.app.state.store
    if principal.role == ADMIN and api_key_id is None:
        raise BadRequest("api_key_id: is required")
    key_id = principal.visible_key(api_key_id)
    assert key_id is not None
    return alerts.key_status(store, api_key_id=key_id, now=store.clock())


@router.post("/v1/budgets/check", summary="Evaluate every budget now and send what is due")
def check_budgets(request: Request, _: Admin) -> dict[str, Any]:
    state = request.app.state
    written = evaluate_now(state.store, anomaly_min_pico=state.evaluator.anomaly_min_pico)
    state.sender.wake()
    return {"alerts_written": written}


def _visible_budget(cur: Any, store: Any, principal: Principal, budget_id: str) -> alerts.Budget:
    budget = alerts.get(cur, budget_id)
    if not _covering(store, principal, [budget]):
        raise Forbidden("a key may read only the budgets that cover it")
    return budget


@router.get("/v1/budgets/{budget_id}", summary="One budget")
def get_budget(request: Request, budget_id: str, principal: AdminOrKey) -> dict[str, Any]:
    store = request.app.state.store
    with store.reading() as cur:
        return _visible_budget(cur, store, principal, budget_id).as_json()


@router.get("/v1/budgets/{budget_id}/status", summary="One budget's period, spend and projection")
def one_budget_status(request: Request, budget_id: str, principal: AdminOrKey) -> dict[str, Any]:
    store = request.app.state.store
    with store.reading() as cur:
        budget = _visible_budget(cur, store, principal, budget_id)
        return alerts.status(cur, budget, now=store.clock(), cache=store.status_cache).as_json()


@router.delete("/v1/budgets/{budget_id}", status_code=204, summary="Delete a budget")
def delete_budget(request: Request, budget_id: str, _: Admin) -> Response:
    store = request.app.state.store
    store.writer.call(lambda con: alerts.delete(con, budget_id, now=store.clock()))
    return Response(status_code=204)


@router.get("/v1/alerts", summary="Alerts with their delivery status and attempts")
def list_alerts(request: Request, principal: AdminOrKey) -> dict[str, Any]:
    store = request.app.state.store
    with store.reading() as cur:
        if principal.role == ADMIN:
            return {"data": alerts.list_alerts(cur)}
        assert principal.key is not None
        mine = [b.id for b in _covering(store, principal, alerts.active(cur))]
        items = alerts.list_alerts(cur, budget_ids=mine, api_key_id=principal.key.api_key_id)
    for item in items:
        item.pop("webhook_url", None)
    return {"data": items}
