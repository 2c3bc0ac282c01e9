"""Reservations against the real server (issue 17): processes and threads racing for the same room
get exactly as many allows as there is room; an acknowledged allow is a durable hold that survives
SIGKILL and a restart, and its settlement after the restart counts the actual cost once."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import ADMIN, INGEST, record

pytestmark = pytest.mark.e2e
ASK = {"api_key_id": "key-a", "model": "minimax-m2-7", "max_input_tokens": 1000, "max_output_tokens": 500}


def _race(url: str, prefix: str, n: int) -> list[str]:
    def one(i: int) -> str:
        with httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {INGEST}"}) as c:
            r = c.post("/v1/reservations", json={"request_id": f"{prefix}-{i}", **ASK})
            r.raise_for_status()
            return r.json()["decision"]

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def test_processes_and_threads_racing_get_exactly_the_room_there_is(server_factory):
    server = server_factory().start()
    admin = {"Authorization": f"Bearer {ADMIN}"}
    r = httpx.post(f"{server.url}/v1/budgets", json={"scope": {"api_key_id": "key-a"}, "amount": "0.0045",
                                                   "enforce": True}, headers=admin)  # 10 holds of 0.00045
    assert r.status_code == 201
    budget = r.json()["id"]
    context = multiprocessing.get_context("spawn")
    with context.Pool(3) as pool:
        results = pool.starmap(_race, [(server.url, f"p{i}", 16) for i in range(3)])
    decisions = [d for part in results for d in part]
    assert decisions.count("allow") == 10 and decisions.count("deny") == 38
    status = httpx.get(f"{server.url}/v1/budgets/{budget}/status", headers=admin).json()
    assert status["held"] == "0.0045"


def test_an_allowed_hold_survives_sigkill_and_restart_then_settles_once(server_factory, tmp_path):
    db = tmp_path / "held.duckdb"
    server = server_factory(db).start()
    admin = {"Authorization": f"Bearer {ADMIN}"}
    ingest = {"Authorization": f"Bearer {INGEST}"}
    budget = httpx.post(f"{server.url}/v1/budgets", json={"scope": {"all": True}, "amount": "0.0009",
                                                          "enforce": True}, headers=admin).json()["id"]
    first = httpx.post(f"{server.url}/v1/reservations", json={"request_id": "k1", **ASK}, headers=ingest).json()
    assert first["decision"] == "allow"
    server.kill()  # right after the acknowledged allow
    server = server_factory(db, port=server.port).start()
    held = httpx.get(f"{server.url}/v1/reservations/k1", headers=ingest).json()
    assert held["status"] == "held" and held["held"] == "0.00045"
    assert httpx.get(f"{server.url}/v1/budgets/{budget}/status", headers=admin).json()["held"] == "0.00045"
    decisions = [httpx.post(f"{server.url}/v1/reservations", json={"request_id": f"k{i}", **ASK},
                            headers=ingest).json()["decision"] for i in (2, 3)]
    assert decisions == ["allow", "deny"]  # the hold from before the crash still takes its room
    body = record("k1", api_key_id="key-a", input_tokens=200, cached_tokens=0, output_tokens=100,
                  thinking_tokens=None, occurred_at=None)
    body["occurred_at"] = httpx.get(f"{server.url}/v1/reservations/k1", headers=ingest).json()["created_at"]
    assert httpx.post(f"{server.url}/v1/usage", json=body, headers=ingest).status_code == 200
    status = httpx.get(f"{server.url}/v1/budgets/{budget}/status", headers=admin).json()
    assert status["held"] == "0.00045" and status["spent"] == "0.00009"  # k2 held; k1 settled at 0.00003 + 0.00006
    assert httpx.get(f"{server.url}/v1/reservations/k1", headers=ingest).json()["status"] == "settled"
