"""GET /v1/rates (the card with all versions), POST /v1/rates (admin: add a version)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import JSONResponse

from metering.api.auth import ADMIN, Principal, require
from metering.errors import RateCardError
from metering.ratecard import parse_version

router = APIRouter(tags=["rates"])

_EXAMPLE = {
    "model": "minimax-m2-7",
    "effective_from": "2026-12-01T00:00:00Z",
    "input": {"current": "0.15", "list": "0.30"},
    "cached_input": {"current": "0.03", "list": "0.06"},
    "output": {"current": "0.60", "list": "1.20"},
}


def card_json(card) -> dict[str, Any]:
    models: dict[str, list[dict[str, Any]]] = {}
    for version in card.all_versions():
        models.setdefault(version.model, []).append(version.as_json())
    return {"currency": "USD", "models": [{"model": m, "versions": v} for m, v in models.items()]}


@router.get("/v1/rates", summary="The rate card with all versions")
def get_rates(request: Request, _: Annotated[Principal, Depends(require(ADMIN))]) -> dict[str, Any]:
    return card_json(request.app.state.store.card)


@router.post("/v1/rates", status_code=201, summary="Add a rate version (prices in USD per 1M tokens)")
def post_rates(
    request: Request,
    _: Annotated[Principal, Depends(require(ADMIN))],
    body: Annotated[dict[str, Any], Body(examples=[_EXAMPLE])],
) -> JSONResponse:
    data = dict(body)
    model = data.pop("model", None)
    if not isinstance(model, str):
        raise RateCardError("model: is required (a string)")
    version = parse_version(model, data, f"rate version for model {model!r}")
    stored = request.app.state.store.add_rate_version(version, source="api")
    return JSONResponse(stored.as_json(), status_code=201)
