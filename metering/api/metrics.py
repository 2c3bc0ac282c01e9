"""GET /metrics (Prometheus), and the middleware that times every request per route template."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from metering.api.auth import ADMIN, METRICS, Principal, require
from metering.services.metrics import UNMATCHED, Metrics

router = APIRouter(tags=["operations"])


class RequestMetrics:
    """Times each HTTP request and counts its status, labelled with the route's template
    (`/v1/budgets/{budget_id}`, or a mount's path) that the router leaves in the scope, so the label
    set is bounded by the app's routes; a path no route serves is `unmatched`. Plain ASGI: a closure
    and a dictionary look-up a request, no response streaming wrapper (Starlette's
    @app.middleware("http") costs far more)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        root = scope.get("root_path", "")
        status = 500  # an exception that escapes the app: the server answers 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            template = getattr(scope.get("route"), "path", None)
            if template is None:  # a mount (the dashboard's files) leaves its path in root_path instead
                mounted = scope.get("root_path", "")
                template = mounted[len(root):] if mounted != root and mounted.startswith(root) else UNMATCHED
            self.metrics.request(scope["method"], template, status, time.perf_counter() - started)


@router.get(
    "/metrics",
    summary="Prometheus metrics: ingest outcomes, request latency per route, webhook deliveries, rollup lag",
    description="Prometheus text exposition (or OpenMetrics, when the scraper's Accept header asks for it). "
                "The admin token or METERING_METRICS_TOKEN; the metrics token may read this route only.",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
def get_metrics(request: Request, _: Annotated[Principal, Depends(require(ADMIN, METRICS))]) -> Response:
    body, content_type = request.app.state.metrics.exposition(request.headers.get("accept"))
    return Response(body, media_type=content_type)
