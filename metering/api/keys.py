"""POST/GET /v1/keys: register API keys (admin)."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from metering.api.auth import ADMIN, Principal, require
from metering.store.db import sha256_hex

router = APIRouter(tags=["keys"])


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    api_key_id: str = Field(min_length=1, max_length=200)
    account_id: str = Field(min_length=1, max_length=200)
    name: str | None = Field(default=None, max_length=200)
    secret: str | None = Field(default=None, min_length=16, max_length=500)
    secret_sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")

    @model_validator(mode="after")
    def one_secret(self) -> KeyCreate:
        if self.secret is not None and self.secret_sha256 is not None:
            raise ValueError("give secret or secret_sha256, not both")
        return self


def create_key(store, body: KeyCreate) -> dict[str, Any]:
    generated = None
    if body.secret_sha256:
        digest = body.secret_sha256.lower()
    else:
        generated = None if body.secret else "sk_" + secrets.token_urlsafe(32)
        digest = sha256_hex(body.secret or generated)  # type: ignore[arg-type]
    key = store.add_key(api_key_id=body.api_key_id, account_id=body.account_id, name=body.name,
                        secret_sha256=digest)
    out = key.as_json()
    if generated:
        out["secret"] = generated  # shown once; only its digest is stored
    return out


@router.post("/v1/keys", status_code=201, summary="Register an API key")
def post_key(request: Request, body: KeyCreate, _: Annotated[Principal, Depends(require(ADMIN))]) -> JSONResponse:
    return JSONResponse(create_key(request.app.state.store, body), status_code=201)


@router.get("/v1/keys", summary="List registered keys")
def list_keys(request: Request, _: Annotated[Principal, Depends(require(ADMIN))]) -> dict[str, Any]:
    return {"data": [key.as_json() for key in request.app.state.store.list_keys()]}
