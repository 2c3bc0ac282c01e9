"""Budget reservations (the gateway's ingest token, or admin): admission before the call."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body

from metering.api.deps import AdminOrIngest, Ctx
from metering.services import reservations as service

router = APIRouter(tags=["reservations"])

_EXAMPLE = {"request_id": "chatcmpl-123", "api_key_id": "key-a", "model": "minimax-m2-7", "max_input_tokens": 4000,
            "max_output_tokens": 1000, "ttl_seconds": 600}


@router.post("/v1/reservations", summary="Hold the most a call can cost against the enforced budgets covering its "
                                         "key: allow (held) or deny (nothing held)")
def reserve(_: AdminOrIngest, ctx: Ctx, body: Annotated[dict[str, Any], Body(examples=[_EXAMPLE])]) -> dict[str, Any]:
    return service.reserve(ctx, body=body)


@router.get("/v1/reservations/{request_id}", summary="One reservation and its status (held, settled, released, "
                                                    "expired)")
def get_reservation(request_id: str, _: AdminOrIngest, ctx: Ctx) -> dict[str, Any]:
    return service.get(ctx, request_id=request_id)


@router.delete("/v1/reservations/{request_id}", summary="Release a hold (the call failed); idempotent")
def release(request_id: str, _: AdminOrIngest, ctx: Ctx) -> dict[str, Any]:
    return service.release(ctx, request_id=request_id)
