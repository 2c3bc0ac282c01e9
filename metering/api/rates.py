"""GET /v1/rates (the card with all versions and aliases), POST /v1/rates (admin: add a version and/or
aliases)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body
from fastapi.responses import JSONResponse

from metering.api.deps import Admin, Ctx
from metering.services import rates as service

router = APIRouter(tags=["rates"])

_EXAMPLE = {
    "model": "minimax-m2-7",
    "effective_from": "2026-12-01T00:00:00Z",
    "input": {"current": "0.15", "list": "0.30"},
    "cached_input": {"current": "0.03", "list": "0.06"},
    "output": {"current": "0.60", "list": "1.20"},
}
_ALIASES = {"model": "minimax-m2-7", "aliases": ["MiniMax-M2.7", "minimax/MiniMax-M2.7"]}


@router.get("/v1/rates", summary="The rate card: each model's aliases and all its versions")
def get_rates(_: Admin, ctx: Ctx) -> dict[str, Any]:
    return service.get_card(ctx)


@router.post("/v1/rates", status_code=201, summary="Add a rate version (prices in USD per 1M tokens) and/or aliases "
             "of the model (other spellings of its id, matched exactly, priced as the model)",
             description="409 when the version's effective_from is taken, or an alias is another model's name or alias "
                         "(or differs from one only in case). A body of only `model` and `aliases` adds aliases to a "
                         "model that has versions; records already stored under an alias are priced by re-rating.")
def post_rates(_: Admin, ctx: Ctx,
               body: Annotated[dict[str, Any], Body(examples=[_EXAMPLE, _ALIASES])]) -> JSONResponse:
    return JSONResponse(service.add_version(ctx, body=body), status_code=201)
