"""Tokens never reach the server's log, even at debug level and on failed requests."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import ADMIN, INGEST, auth, record

pytestmark = pytest.mark.e2e


def test_tokens_are_never_written_to_the_log(server_factory, tmp_path):
    server = server_factory(tmp_path / "log.duckdb", log_level="debug").start()
    key_secret = "sk_log_test_secret_0123456789abcdef"
    wrong = "wrong_token_never_to_be_logged_0123456789"
    with httpx.Client(base_url=server.url, timeout=30) as http:
        http.post("/v1/keys", json={"api_key_id": "k", "account_id": "a", "secret": key_secret}, headers=auth(ADMIN))
        http.post("/v1/usage", json=[record("l1", api_key_id="k"), record("bad", input_tokens=-1)], headers=auth(INGEST))
        http.get("/v1/usage", headers=auth(key_secret))
        http.get("/v1/keys", headers=auth(key_secret))  # 403
        http.get("/v1/usage", headers=auth(wrong))  # 401
        http.get("/dashboard/", headers=auth(ADMIN))
    server.stop()
    log = server.log.read_text()
    assert log.strip(), "the server logged nothing at debug level: the test would prove nothing"
    for secret in (ADMIN, INGEST, key_secret, wrong):
        assert secret not in log
