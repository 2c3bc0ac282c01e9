"""The one error handler: every error response is {"error": {"code", "message"}}."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from metering.errors import MeteringError, TooManyRequests

log = logging.getLogger("metering.api")

_HTTP_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 408: "request_timeout", 413: "payload_too_large", 415: "unsupported_media_type",
}


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    """Every error: {"error": {"code", "message"}}."""

    error: ErrorDetail


# Documented on every route (a route that cannot answer one of them says so by never doing it).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (400, "a malformed request"), (401, "no token, or an unknown one"), (403, "the token's role may not do this"),
        (404, "no such thing"), (408, "the body did not arrive in time"), (409, "it exists already"),
        (413, "the body is too large"), (429, "too many expensive reads at once, or one ran too long: see Retry-After"),
        (422, "invalid content (for ingest: some records rejected, the others stored)"),
        (503, "the database cannot be written or is held by another process"),
    )
}


def error_response(status: int, code: str, message: str, **extra: object) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}, **extra}, status_code=status)


def install(app: FastAPI) -> None:
    @app.exception_handler(MeteringError)
    async def domain_error(request: Request, exc: MeteringError) -> JSONResponse:
        response = error_response(exc.status, exc.code, exc.message)
        if isinstance(exc, TooManyRequests):
            response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query"))
            parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        status = 400 if any(e.get("loc", ("",))[0] == "query" for e in exc.errors()) else 422
        return error_response(status, "invalid_request", "; ".join(parts) or "invalid request")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "error")
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "internal error; the server log has the details")
