"""What the per-request metrics middleware (metering.api.metrics.RequestMetrics) costs: the same app
with and without it, called in process through ASGI (no sockets, no load generator, so the
difference is the middleware's and not the network's), in alternating rounds. Prints figures;
asserts nothing.

    .venv/bin/python -m benchmarks.metrics [--quick]

GET /healthz one request at a time shows the added CPU per request (the event loop thread's CPU
time, which other processes on a shared machine do not inflate); single-record POST /v1/usage from
64 concurrent callers (group commits, as in benchmarks/ingest.py) shows it against real work.
benchmarks/ingest.py measures the whole server over HTTP.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from tests.conftest import ADMIN, INGEST, record

# (GET requests a round, POSTs a round, rounds); rounds alternate which app goes first
SIZES = {"smoke": (100, 128, 2), "quick": (500, 1_024, 12), "full": (1_000, 4_096, 24)}


def build(db: Path, *, instrumented: bool):
    from metering.api.app import create_app
    from metering.api.metrics import RequestMetrics
    from metering.settings import Settings

    app = create_app(Settings(db_path=db, admin_token=ADMIN, ingest_token=INGEST, evaluate_on_ingest=False))
    if not instrumented:
        app.user_middleware = [m for m in app.user_middleware if m.cls is not RequestMetrics]
    return app


async def call(app, method: str, path: str, body: bytes = b"") -> int:
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    status = 0

    async def send(message: dict) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    headers = [(b"authorization", f"Bearer {INGEST}".encode()), (b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": headers,
             "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000)}
    await app(scope, receive, send)
    return status


async def healthz(app, n: int) -> float:
    """CPU seconds of this thread (the event loop's, where the async route runs) a request: other
    processes on the machine do not count, as they would in wall time."""
    started = time.thread_time()
    for _ in range(n):
        await call(app, "GET", "/healthz")
    return (time.thread_time() - started) / n


async def posts(app, bodies: list[bytes], concurrency: int = 64) -> float:
    queue = list(reversed(bodies))

    async def worker() -> None:
        while queue:
            assert await call(app, "POST", "/v1/usage", queue.pop()) == 200

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(bodies) / (time.perf_counter() - started)


async def measure(size: str) -> dict[str, dict[str, list[float]]]:
    gets, n_posts, rounds = SIZES[size]
    at = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    figures: dict[str, dict[str, list[float]]] = {"with": {"get": [], "post": []}, "without": {"get": [], "post": []}}
    with tempfile.TemporaryDirectory() as tmp:
        apps = {"with": build(Path(tmp) / "with.duckdb", instrumented=True),
                "without": build(Path(tmp) / "without.duckdb", instrumented=False)}
        async with apps["with"].router.lifespan_context(apps["with"]), \
                apps["without"].router.lifespan_context(apps["without"]):
            for app in apps.values():  # warm up: the middleware stack is built on the first call
                await healthz(app, 50)
            for r in range(rounds):
                for name in (("with", "without") if r % 2 == 0 else ("without", "with")):
                    app = apps[name]
                    figures[name]["get"].append(await healthz(app, gets))
                    bodies = [orjson.dumps(record(f"{name}-{r}-{i}", occurred_at=at)) for i in range(n_posts)]
                    figures[name]["post"].append(await posts(app, bodies))
    return figures


def scenarios(size: str = "full") -> list[dict]:
    figures = asyncio.run(measure(size))
    get_with = statistics.median(figures["with"]["get"]) * 1e6
    get_without = statistics.median(figures["without"]["get"]) * 1e6
    post_with = statistics.median(figures["with"]["post"])
    post_without = statistics.median(figures["without"]["post"])
    return [
        {"scenario": "metrics middleware, GET /healthz in process, one at a time (CPU time)",
         "figure": f"{get_with:.1f} us a request with it ({get_with - get_without:+.1f} us, "
                   f"{100 * (get_with - get_without) / get_without:+.1f}%)",
         "reference": f"the same app without it: {get_without:.1f} us a request",
         "values": {"us_with": get_with, "us_without": get_without}},
        {"scenario": "metrics middleware, single-record POST /v1/usage in process, 64 concurrent",
         "figure": f"{post_with:,.0f} req/s with it ({100 * (post_with - post_without) / post_without:+.1f}%)",
         "reference": f"the same app without it: {post_without:,.0f} req/s",
         "values": {"requests_per_s_with": post_with, "requests_per_s_without": post_without}},
    ]


def main() -> None:
    from benchmarks.run import module_main

    module_main(scenarios)


if __name__ == "__main__":
    main()
