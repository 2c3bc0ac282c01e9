"""The app factory: one Store per app, opened at start-up and closed at shutdown."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from metering import __version__
from metering.api import (
    budgets,
    docs,
    errors,
    keys,
    metrics,
    periods,
    rates,
    reconcile,
    reports,
    reservations,
    traces,
    usage,
)
from metering.api.auth import TokenCheck
from metering.api.deps import AnyRole
from metering.api.limits import ReadLimiter
from metering.services import budgets as budgets_service
from metering.services.alerts import Evaluator
from metering.services.context import Context, open_store
from metering.services.delivery import Sender
from metering.services.metrics import Metrics
from metering.services.periods import PeriodCloser
from metering.settings import Settings
from metering.store.db import Store

DASHBOARD_DIR = Path(__file__).resolve().parents[2] / "dashboards"
DASHBOARD_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                 "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


class DashboardHeaders:
    """Security headers on the dashboard's responses. Plain ASGI, so the API's requests pass
    through at the cost of one string comparison (Starlette's @app.middleware("http") wraps every
    response in a stream and cost about half of a small request's time)."""

    HEADERS = (("content-security-policy", DASHBOARD_CSP), ("x-content-type-options", "nosniff"),
               ("referrer-policy", "no-referrer"))

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/dashboard"):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.HEADERS:
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(settings: Settings, *, store: Store | None = None) -> FastAPI:
    """`store`: an already open store (the caller closes it); otherwise one is opened at start-up."""
    instruments = Metrics()  # this app's registry (GET /metrics); never the process-wide default

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = store is None
        app.state.settings = settings
        app.state.store = store if store is not None else open_store(settings)
        app.state.ctx = ctx = Context(app.state.store, settings, metrics=instruments)
        instruments.watch(app.state.store.writer)
        budgets_service.track_untracked(ctx)
        ctx.admission  # noqa: B018 (the open holds read back before the first request)
        app.state.tokens = TokenCheck(
            admin_token=settings.admin_token, ingest_token=settings.ingest_token, store=app.state.store,
            metrics_token=settings.metrics_token,
        )
        app.state.limiter = ReadLimiter(settings.reads_per_principal)
        app.state.sender = Sender(ctx).start()
        app.state.evaluator = Evaluator(ctx, on_written=app.state.sender.wake).start()
        closer = (PeriodCloser(ctx, interval=settings.evaluate_interval).start()
                  if settings.auto_close_days is not None else None)
        try:
            yield
        finally:
            if closer is not None:
                closer.stop()
            app.state.evaluator.stop()
            app.state.sender.stop()
            if owned:
                app.state.store.close()

    app = FastAPI(
        title="metering",
        version=__version__,
        summary="Usage metering and cost analytics for LLM APIs",
        lifespan=lifespan,
        responses=errors.ERROR_RESPONSES,
        docs_url=None,  # FastAPI's pages load their scripts from a CDN: metering.api.docs serves them instead
        redoc_url=None,
    )
    errors.install(app)
    app.state.metrics = instruments

    @app.get("/healthz", tags=["health"], summary="Liveness; needs no token")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/me", tags=["health"], summary="Who the token is: role, and for a key its id and account")
    async def me(principal: AnyRole) -> dict[str, Any]:
        key = principal.key
        return {"role": principal.role, "api_key_id": key.api_key_id if key else None,
                "account_id": key.account_id if key else None}

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/dashboard/")

    app.add_middleware(DashboardHeaders)
    app.add_middleware(metrics.RequestMetrics, metrics=instruments)  # outermost: times the whole request
    app.mount("/dashboard", StaticFiles(directory=DASHBOARD_DIR, html=True), name="dashboard")

    app.include_router(usage.router)
    app.include_router(traces.router)
    app.include_router(keys.router)
    app.include_router(rates.router)
    app.include_router(reports.router)
    app.include_router(budgets.router)
    app.include_router(reservations.router)
    app.include_router(docs.router)
    app.include_router(reconcile.router)
    app.include_router(periods.router)
    app.include_router(metrics.router)
    return app
