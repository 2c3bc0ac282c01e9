"""Shared fixtures: a fresh store per test (a real DuckDB file), an app on it, seeded record
factories, and helpers to run the real server as a subprocess."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from metering.api.app import create_app
from metering.ratecard import load_rate_card
from metering.services.context import Context
from metering.settings import DEFAULT_RATE_CARD, Settings
from metering.store.db import Store

ADMIN = "admin-token-for-tests-0123456789"
INGEST = "ingest-token-for-tests-0123456789"
METRICS = "metrics-token-for-tests-0123456789"
SECRET_A = "sk_key_a_secret_0123456789abcdef"
SECRET_B = "sk_key_b_secret_0123456789abcdef"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
MODEL = "minimax-m2-7"


class FixedClock:
    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


@pytest.fixture
def store(tmp_path: Path, clock: FixedClock) -> Iterator[Store]:
    s = Store(tmp_path / "metering.duckdb", clock=clock)
    s.seed_rate_card(load_rate_card(DEFAULT_RATE_CARD), source="test")
    yield s
    s.close()


@pytest.fixture
def ctx(store: Store) -> Context:
    """The services' context over the test's store (the app's own is client.app.state.ctx)."""
    return Context(store, Settings(db_path=store.path, evaluate_on_ingest=False))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # Budget evaluation runs when a test asks (POST /v1/budgets/check), so results do not race.
    return Settings(db_path=tmp_path / "metering.duckdb", admin_token=ADMIN, ingest_token=INGEST,
                    metrics_token=METRICS, evaluate_on_ingest=False)


@pytest.fixture
def client(settings: Settings, store: Store) -> Iterator[TestClient]:
    with TestClient(create_app(settings, store=store)) as c:
        yield c


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def two_keys(client: TestClient) -> None:
    for key_id, account, secret in (("key-a", "acct-1", SECRET_A), ("key-b", "acct-2", SECRET_B)):
        r = client.post("/v1/keys", json={"api_key_id": key_id, "account_id": account, "secret": secret},
                        headers=auth(ADMIN))
        assert r.status_code == 201, r.text


def record(request_id: str = "req-1", **fields: Any) -> dict[str, Any]:
    """A valid canonical record; fields override."""
    base: dict[str, Any] = {
        "request_id": request_id,
        "occurred_at": "2026-11-25T10:00:00Z",
        "api_key_id": "key-a",
        "model": MODEL,
        "endpoint": "chat.completions",
        "input_tokens": 1000,
        "cached_tokens": 200,
        "output_tokens": 300,
        "thinking_tokens": 100,
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not ...}


def generate_records(n: int, *, seed: int = 42, start: datetime = NOW - timedelta(days=20),
                     span: timedelta = timedelta(days=20), keys: int = 20, prefix: str = "gen") -> list[dict]:
    """Seeded canonical records with long-tailed token counts, cache hits and thinking."""
    rng = random.Random(seed)
    models = [MODEL, MODEL, MODEL, "unpriced-model"]
    seconds = int(span.total_seconds())
    out = []
    for i in range(n):
        input_tokens = int(rng.paretovariate(1.2) * 200)
        cached = rng.randint(0, input_tokens) if rng.random() < 0.6 else 0
        write = rng.randint(0, input_tokens - cached) if rng.random() < 0.1 else 0
        output = int(rng.paretovariate(1.5) * 50)
        thinking = rng.randint(0, output) if rng.random() < 0.7 else None
        out.append({
            "request_id": f"{prefix}-{seed}-{i}",
            "occurred_at": (start + timedelta(seconds=rng.randrange(seconds))).isoformat(),
            "api_key_id": f"key-{int(rng.paretovariate(1.0)) % keys}",
            "model": rng.choice(models),
            "endpoint": rng.choice(["chat.completions", "responses", "messages"]),
            "input_tokens": min(input_tokens, 2**31 - 1),
            "cached_tokens": cached,
            "cache_write_tokens": write,
            "output_tokens": output,
            "thinking_tokens": thinking,
            "web_search_requests": 1 if rng.random() < 0.02 else 0,
            "tags": {"project": rng.choice(["alpha", "beta", "gamma"])},
        })
    return out


# --- the real server as a subprocess ------------------------------------------------------------------


def ingest(client, records: list[dict]) -> None:
    """POST records through an app's client (the ingest token), 10,000 a request; each must be accepted."""
    for i in range(0, len(records), 10_000):
        r = client.post("/v1/usage", json=records[i:i + 10_000], headers=auth(INGEST))
        assert r.status_code == 200, r.text[:300]


def get(client, path: str, **params: Any):
    """GET as admin; it must answer 200."""
    r = client.get(path, params=params, headers=auth(ADMIN))
    assert r.status_code == 200, r.text[:500]
    return r


def ledger_cost(store: Store, start: str = "2000-01-01", end: str = "2100-01-01",
                account: str | None = None) -> tuple[Decimal, Decimal]:
    """(cost, list cost) in USD of the ledger rows in [start, end), of one account if given: the
    independent sum documents are checked against."""
    sql = ("SELECT coalesce(sum(cost_pico), 0), coalesce(sum(list_cost_pico), 0) FROM ledger l "
           "LEFT JOIN api_keys k USING (api_key_id) WHERE occurred_at >= ?::TIMESTAMP AND occurred_at < ?::TIMESTAMP")
    params = [start, end]
    if account:
        sql += " AND coalesce(k.account_id, 'unassigned') = ?"
        params.append(account)
    with store.reading() as cur:
        cost, list_cost = cur.execute(sql, params).fetchone()
    return Decimal(cost).scaleb(-12), Decimal(list_cost).scaleb(-12)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`metering serve` in a subprocess on 127.0.0.1."""

    def __init__(self, db: Path, *, port: int | None = None, extra_env: dict[str, str] | None = None,
                 log_level: str = "warning", args: list[str] | None = None) -> None:
        self.log_level = log_level
        self.args = list(args or [])  # more `serve` options, e.g. --lake DIR --node-id ID
        self.db = db
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "METERING_ADMIN_TOKEN": ADMIN, "METERING_INGEST_TOKEN": INGEST,
                    **(extra_env or {})}
        self.proc: subprocess.Popen | None = None
        self.log = db.parent / f"server-{self.port}.log"

    def start(self, timeout: float = 30.0) -> Server:
        with self.log.open("ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "metering.cli", "serve", "--db", str(self.db), "--port", str(self.port),
                 "--log-level", self.log_level, *self.args],
                env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"server did not start: {self.log.read_text()}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[Server] = []

    def make(db: Path | None = None, **kwargs: Any) -> Server:
        server = Server(db or tmp_path / "served.duckdb", **kwargs)
        started.append(server)
        return server

    yield make
    for server in started:
        server.kill()


def api_routes(app) -> list:
    """Every APIRoute of the app, those of included routers too (FastAPI >= 0.16x keeps an included
    router's routes inside it rather than copying them into app.routes)."""
    from fastapi.routing import APIRoute

    found = []

    def walk(routes) -> None:
        for route in routes:
            if isinstance(route, APIRoute):
                found.append(route)
            elif getattr(route, "original_router", None) is not None:
                walk(route.original_router.routes)

    walk(app.routes)
    return found


# --- Apache Spark (the lake's report engine) -------------------------------------------------------------


@pytest.fixture(scope="session")
def spark():
    """The run's one SparkSession (local[2]), shared with the code under test (metering.lake builds one
    per process). Where Spark cannot start (no Java): skipped locally, a failure in CI
    (METERING_REQUIRE_SPARK=1, set by .ci/run)."""
    from metering.lake import LakeError
    from metering.lake._spark import session

    try:
        return session("local[2]")
    except LakeError as exc:
        if os.environ.get("METERING_REQUIRE_SPARK"):
            pytest.fail(f"Apache Spark cannot start: {exc.message}", pytrace=False)
        pytest.skip(f"Apache Spark cannot start: {exc.message}")
