"""GET /v1/records/{request_id}: one stored record with its cost per token class."""

from __future__ import annotations

from datetime import UTC
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from metering.api.auth import ADMIN, KEY, Principal, require
from metering.errors import NotFound
from metering.pricing import price_record
from metering.ratecard import format_decimal
from metering.records import UsageRecord
from metering.store import queries

router = APIRouter(tags=["usage"])


@router.get("/v1/records/{request_id}", summary="One stored record, its rate version and its cost per token class")
def get_record(request: Request, request_id: str,
               principal: Annotated[Principal, Depends(require(ADMIN, KEY))]) -> dict[str, Any]:
    store = request.app.state.store
    with store.reading() as cur:
        row = queries.record(cur, request_id)
    if row is None:
        raise NotFound(f"no record with request_id {request_id!r}")
    principal.visible_key(row["api_key_id"])  # a key may read only its own records (403 otherwise)
    rec = UsageRecord(
        request_id=row["request_id"], occurred_at=row["occurred_at"].replace(tzinfo=UTC),
        api_key_id=row["api_key_id"], model=row["model"], endpoint=row["endpoint"],
        input_tokens=row["input_tokens"], cached_tokens=row["cached_tokens"],
        cache_write_tokens=row["cache_write_tokens"], output_tokens=row["output_tokens"],
        thinking_tokens=row["thinking_tokens"], web_search_requests=row["web_search_requests"],
        tags=dict(row["tags"]) if row["tags"] else None,
    )
    out: dict[str, Any] = {"record": rec.to_canonical(), "received_at": row["received_at"].isoformat() + "Z",
                           "currency": "USD", "rate_version": None, "cost": None, "list_cost": None}
    version = store.card.version_by_id(row["rate_version_id"]) if row["rate_version_id"] is not None else None
    if version is not None:
        priced = price_record(rec, version)
        out["rate_version"] = version.as_json()
        for name, breakdown in (("cost", priced.cost), ("list_cost", priced.list_cost)):
            out[name] = {part: format_decimal(amount) for part, amount in breakdown.as_usd().items()}
    return out
