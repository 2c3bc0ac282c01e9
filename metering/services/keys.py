"""API keys: registered with an account and a secret kept only as its SHA-256 digest."""

from __future__ import annotations

import secrets
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from metering.errors import BadRequest
from metering.services.context import Context
from metering.store.db import sha256_hex


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

    @classmethod
    def parse(cls, body: dict[str, Any]) -> KeyCreate:
        try:
            return cls(**body)
        except ValidationError as exc:
            raise BadRequest("; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}"
                                       for e in exc.errors())) from None


def create(ctx: Context, *, body: KeyCreate) -> dict[str, Any]:
    """Register a key; a secret generated here is in the answer, once (only its digest is stored)."""
    generated = None
    if body.secret_sha256:
        digest = body.secret_sha256.lower()
    else:
        generated = None if body.secret else "sk_" + secrets.token_urlsafe(32)
        digest = sha256_hex(body.secret or generated)  # type: ignore[arg-type]
    key = ctx.store.add_key(api_key_id=body.api_key_id, account_id=body.account_id, name=body.name,
                            secret_sha256=digest)
    out = key.as_json()
    if generated:
        out["secret"] = generated
    return out


def list_keys(ctx: Context) -> list[dict[str, Any]]:
    return [key.as_json() for key in ctx.store.list_keys()]
