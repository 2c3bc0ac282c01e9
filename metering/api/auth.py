"""Bearer tokens -> principals (admin, ingest, metrics, key), and the dependency that admits roles."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from fastapi import Request

from metering.access import ADMIN, INGEST, KEY, METRICS, Principal
from metering.errors import Forbidden, Unauthorized
from metering.store.db import Store, sha256_hex

__all__ = ["ADMIN", "INGEST", "KEY", "METRICS", "Principal", "TokenCheck", "require"]


class TokenCheck:
    """Resolves a bearer token to a Principal. Admin, ingest and metrics tokens are kept only as
    SHA-256 digests and compared in constant time; key secrets are looked up by digest."""

    def __init__(self, *, admin_token: str | None, ingest_token: str | None, store: Store,
                 metrics_token: str | None = None) -> None:
        self._admin = sha256_hex(admin_token) if admin_token else None
        self._ingest = sha256_hex(ingest_token) if ingest_token else None
        self._metrics = sha256_hex(metrics_token) if metrics_token else None
        self._store = store

    def resolve(self, header: str | None) -> Principal:
        if not header:
            raise Unauthorized("missing Authorization header: send `Authorization: Bearer <token>`")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("the Authorization header must be `Bearer <token>`")
        digest = sha256_hex(token)
        # Compare against every role digest every time, so timing does not tell which matched.
        is_admin = self._admin is not None and hmac.compare_digest(digest, self._admin)
        is_ingest = self._ingest is not None and hmac.compare_digest(digest, self._ingest)
        is_metrics = self._metrics is not None and hmac.compare_digest(digest, self._metrics)
        if is_admin:
            return Principal(ADMIN)
        if is_ingest:
            return Principal(INGEST)
        if is_metrics:
            return Principal(METRICS)
        key = self._store.key_for_secret(token)
        if key is not None:
            return Principal(KEY, key)
        raise Unauthorized("unknown token")


def require(*roles: str) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency admitting the given roles: 401 for no or unknown token, 403 for others.
    Async because it never waits (tokens and keys are in memory): a sync dependency would cost
    every request a trip through the thread pool. The roles are on the dependency (`.roles`), so
    tests can read every route's rule from the route table."""

    async def dependency(request: Request) -> Principal:
        principal = request.app.state.tokens.resolve(request.headers.get("authorization"))
        if principal.role not in roles:
            raise Forbidden(f"the {principal.role} role may not use {request.method} {request.url.path}")
        return principal

    dependency.roles = frozenset(roles)  # type: ignore[attr-defined]
    return dependency
