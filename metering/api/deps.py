"""What routes depend on: the principal of each role set, and the service context."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from metering.api.auth import ADMIN, INGEST, KEY, Principal, require
from metering.services.context import Context

Admin = Annotated[Principal, Depends(require(ADMIN))]
AdminOrKey = Annotated[Principal, Depends(require(ADMIN, KEY))]
AdminOrIngest = Annotated[Principal, Depends(require(ADMIN, INGEST))]
AnyRole = Annotated[Principal, Depends(require(ADMIN, INGEST, KEY))]


async def context(request: Request) -> Context:
    return request.app.state.ctx


Ctx = Annotated[Context, Depends(context)]
