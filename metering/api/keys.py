"""POST/GET /v1/keys: register API keys (admin)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from metering.api.deps import Admin, Ctx
from metering.services import keys as service
from metering.services.keys import KeyCreate

router = APIRouter(tags=["keys"])


@router.post("/v1/keys", status_code=201, summary="Register an API key")
def post_key(body: KeyCreate, _: Admin, ctx: Ctx) -> JSONResponse:
    return JSONResponse(service.create(ctx, body=body), status_code=201)


@router.get("/v1/keys", summary="List registered keys")
def list_keys(_: Admin, ctx: Ctx) -> dict[str, Any]:
    return {"data": service.list_keys(ctx)}
