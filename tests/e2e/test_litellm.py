"""The LiteLLM callback with LiteLLM itself: real `litellm.completion` / `acompletion` /
`responses` calls answered by LiteLLM's `mock_response` (no provider is called), the callback
registered as LiteLLM registers callbacks, records delivered through UsageClient to the real
server, and the ledger checked for each record and its exact cost. Nothing may reach the network:
an audit hook records every connection and name lookup that leaves the loopback, and each test
ends by asserting there was none (LiteLLM must use its bundled cost map and tokenizers)."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # before litellm is imported: no cost map download

import httpx
import litellm
import pytest
import yaml
from litellm.integrations.custom_logger import CustomLogger
from litellm.proxy.types_utils.utils import get_instance_fn

import metering.integrations.litellm as integration
from metering.client import UsageClient
from metering.integrations.litellm import MeteringCallback
from metering.settings import GATEWAY_ENVIRONMENT, SettingsError
from tests.conftest import ADMIN, INGEST, MODEL, Server, auth

pytestmark = [
    pytest.mark.e2e,
    # LiteLLM's own types, built lazily by pydantic on first use: not ours to fix.
    pytest.mark.filterwarnings("ignore:.*using the `ReadOnly` qualifier:UserWarning"),
]

# The rate card's current prices for the model (data/rate_card.toml), USD per 1M tokens.
INPUT, CACHED, OUTPUT = Decimal("0.15"), Decimal("0.03"), Decimal("0.60")

# --- no network ------------------------------------------------------------------------------------

_outbound: list[str] | None = None


def _is_local(host: object) -> bool:
    if host in (None, "localhost", "") or isinstance(host, bytes | int):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False  # a name other than localhost: a lookup that would leave the machine


def _audit(event: str, args: tuple) -> None:
    if _outbound is None:
        return
    if event == "socket.getaddrinfo" and not _is_local(args[0]):
        _outbound.append(f"getaddrinfo {args[0]}")
    elif event == "socket.connect" and isinstance(args[1], tuple) and not _is_local(args[1][0]):
        _outbound.append(f"connect {args[1]}")


sys.addaudithook(_audit)  # audit hooks cannot be removed: it records only while a test here runs


@pytest.fixture(autouse=True)
def no_network():
    global _outbound
    _outbound = []
    yield
    # LiteLLM copies litellm.callbacks into its own success lists: take our handlers out of all of them.
    for callback in list(litellm.logging_callback_manager.get_all_callbacks()):
        if isinstance(callback, MeteringCallback):
            litellm.logging_callback_manager.remove_callback_from_all_lists(callback)
    seen, _outbound = _outbound, None
    assert seen == [], f"outbound network attempts: {seen}"


def test_the_network_guard_sees_outbound_attempts():
    _audit("socket.connect", (None, ("93.184.216.34", 443)))
    _audit("socket.getaddrinfo", ("raw.githubusercontent.com", 443))
    _audit("socket.connect", (None, ("127.0.0.1", 8000)))
    assert _outbound == ["connect ('93.184.216.34', 443)", "getaddrinfo raw.githubusercontent.com"]
    _outbound.clear()


# --- helpers -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One real server for the module: every test's request ids are its own."""
    server = Server(tmp_path_factory.mktemp("litellm") / "ledger.duckdb").start()
    yield server
    server.kill()


def mock(request_id: str, prompt: int, cached: int, completion: int, reasoning: int) -> dict:
    """A chat completion as a provider returns it (LiteLLM's mock_response returns it as is)."""
    return {
        "id": request_id, "object": "chat.completion", "created": int(time.time()), "model": MODEL,
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hello"}}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                  "prompt_tokens_details": {"cached_tokens": cached},
                  "completion_tokens_details": {"reasoning_tokens": reasoning}},
    }


def stored(url: str, request_id: str) -> dict:
    r = httpx.get(f"{url}/v1/records/{request_id}", headers=auth(ADMIN), timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def cost(input_tokens: int, cached: int, output: int) -> Decimal:
    return ((input_tokens - cached) * INPUT + cached * CACHED + output * OUTPUT) / 10**6


def delivered(client: UsageClient, count: int) -> None:
    """Wait for LiteLLM's logging thread to hand over `count` records, then flush them."""
    deadline = time.monotonic() + 30
    while client.stats()["sent"] < count and time.monotonic() < deadline:
        time.sleep(0.02)
    assert client.stats()["sent"] == count
    assert client.flush(timeout=30) is True


async def handed_over(client: UsageClient, count: int) -> None:
    """LiteLLM logs async calls in tasks on the caller's event loop: keep the loop running (as a
    proxy's does) until they have handed their records to the client."""
    deadline = time.monotonic() + 30
    while client.stats()["sent"] < count and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


def recent(occurred_at: str) -> bool:
    ts = datetime.fromisoformat(occurred_at.replace("Z", "+00:00"))
    return ts.tzinfo is not None and abs(datetime.now(UTC) - ts) < timedelta(minutes=2)


# --- the callback through LiteLLM -----------------------------------------------------------------


def test_sync_completion_lands_in_the_ledger_with_the_exact_cost(server, tmp_path):
    with UsageClient(server.url, INGEST, spool_dir=tmp_path / "spool") as client:
        litellm.callbacks = [MeteringCallback(client)]
        request_id = f"chatcmpl-{uuid.uuid4()}"
        response = litellm.completion(
            model=f"openai/{MODEL}", messages=[{"role": "user", "content": "hi"}],
            mock_response=mock(request_id, 2006, 1920, 300, 200),
            metadata={"user_api_key_alias": "key-a", "user_api_key_team_alias": "team-x",
                      "user_api_key_project_alias": "proj-1", "spend_logs_metadata": {"feature": "search"}},
        )
        assert response.id == request_id
        delivered(client, 1)
    got = stored(server.url, request_id)
    rec = got["record"]
    assert (rec["model"], rec["api_key_id"], rec["endpoint"]) == (MODEL, "key-a", "chat.completions")
    tokens = (rec["input_tokens"], rec["cached_tokens"], rec["output_tokens"], rec["thinking_tokens"])
    assert tokens == (2006, 1920, 300, 200)
    assert rec["tags"] == {"project": "proj-1", "team": "team-x", "feature": "search"}
    assert recent(rec["occurred_at"])
    assert Decimal(got["cost"]["total"]) == cost(2006, 1920, 300) == Decimal("0.0002505")


def test_async_completions_land_in_the_ledger_once_each(server, tmp_path):
    ids = [f"chatcmpl-{uuid.uuid4()}" for _ in range(5)]
    with UsageClient(server.url, INGEST, spool_dir=tmp_path / "spool") as client:
        litellm.callbacks = [MeteringCallback(client, default_api_key_id="key-sdk")]

        async def calls():
            responses = await asyncio.gather(*[
                litellm.acompletion(model=f"openai/{MODEL}", messages=[{"role": "user", "content": "hi"}],
                                    mock_response=mock(rid, 1000 + i, 100 * i, 50 + i, i)) for i, rid in enumerate(ids)])
            await handed_over(client, 5)
            return responses

        responses = asyncio.run(calls())
        assert [r.id for r in responses] == ids
        delivered(client, 5)
        assert client.stats()["accepted"] == 5 and client.stats()["duplicates"] == 0  # one event per call
    for i, rid in enumerate(ids):
        got = stored(server.url, rid)
        assert got["record"]["api_key_id"] == "key-sdk" and got["record"]["input_tokens"] == 1000 + i
        assert Decimal(got["cost"]["total"]) == cost(1000 + i, 100 * i, 50 + i)


def test_streamed_completion_is_reported_once_with_the_tokens_litellm_counted(server, tmp_path):
    with UsageClient(server.url, INGEST) as client:
        litellm.callbacks = [MeteringCallback(client)]

        async def call():
            stream = await litellm.acompletion(model=f"openai/{MODEL}", messages=[{"role": "user", "content": "hi there"}],
                                               mock_response="hello streaming world", stream=True)
            chunks = [chunk async for chunk in stream]
            await handed_over(client, 1)
            return chunks

        chunks = asyncio.run(call())
        delivered(client, 1)
    got = stored(server.url, chunks[0].id)
    rec = got["record"]
    assert rec["input_tokens"] > 0 and rec["output_tokens"] > 0  # counted by LiteLLM with its bundled tokenizer
    assert Decimal(got["cost"]["total"]) == cost(rec["input_tokens"], rec["cached_tokens"], rec["output_tokens"])


def test_responses_api_call_is_reported(server, tmp_path):
    with UsageClient(server.url, INGEST) as client:
        litellm.callbacks = [MeteringCallback(client)]
        response = litellm.responses(model=f"openai/{MODEL}", input="hi", mock_response="hello")
        delivered(client, 1)
    rec = stored(server.url, response.id)["record"]
    assert rec["model"] == MODEL  # the provider prefix is stripped
    assert (rec["input_tokens"], rec["output_tokens"]) == (response.usage.input_tokens, response.usage.output_tokens)


# --- the proxy's configuration form -----------------------------------------------------------------


def test_proxy_config_callbacks_entry_loads_the_handler_from_the_environment(server, tmp_path, monkeypatch):
    """The proxy resolves each `litellm_settings.callbacks` entry with get_instance_fn (the
    proxy server itself, litellm[proxy], is not installable here: its litellm-proxy package is
    not on the registry); the handler it gets must be a CustomLogger configured from the env."""
    config = tmp_path / "config.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        f"    litellm_params: {{model: openai/MiniMax-M2.7, api_key: sk-none}}\n"
        "litellm_settings:\n"
        "  callbacks: [\"metering.integrations.litellm.handler\"]\n"
    )
    monkeypatch.setenv("METERING_URL", server.url)
    monkeypatch.setenv("METERING_INGEST_TOKEN", INGEST)
    monkeypatch.setenv("METERING_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setattr(integration, "_handler", None)
    entries = yaml.safe_load(config.read_text())["litellm_settings"]["callbacks"]
    handler = get_instance_fn(value=entries[0], config_file_path=str(config))
    assert isinstance(handler, MeteringCallback) and isinstance(handler, CustomLogger)
    assert get_instance_fn(value=entries[0], config_file_path=str(config)) is handler  # one instance
    litellm.callbacks = [handler]
    request_id = f"chatcmpl-{uuid.uuid4()}"
    litellm.completion(model=f"openai/{MODEL}", messages=[{"role": "user", "content": "hi"}],
                       mock_response=mock(request_id, 500, 0, 20, 0),
                       metadata={"user_api_key_hash": "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b",
                                 "user_api_key_end_user_id": "customer-9"})
    client = handler.client
    try:
        assert client.durable and client.spool_path == tmp_path / "spool"
        delivered(client, 1)
    finally:
        client.close()
    rec = stored(server.url, request_id)["record"]
    assert rec["api_key_id"] == "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b"
    assert rec["tags"] == {"end_user": "customer-9"}


def test_handler_without_its_environment_names_what_is_missing(monkeypatch):
    monkeypatch.delenv("METERING_URL", raising=False)
    monkeypatch.setenv("METERING_INGEST_TOKEN", INGEST)
    monkeypatch.setattr(integration, "_handler", None)
    with pytest.raises(SettingsError, match="METERING_URL"):
        integration.handler


def test_gateway_settings_are_documented():
    text = (Path(__file__).parents[2] / "docs" / "integrations.md").read_text()
    for name in GATEWAY_ENVIRONMENT:
        assert f"`{name}`" in text, name


# --- budget reservations (issue 17) -------------------------------------------------------------------


def test_the_client_reserves_and_releases_against_the_real_server(server):
    httpx.post(f"{server.url}/v1/budgets", json={"scope": {"api_key_id": "res-key"}, "amount": "0.0009",
                                                  "enforce": True}, headers=auth(ADMIN)).raise_for_status()
    with UsageClient(server.url, INGEST) as client:
        first = client.reserve("cr-1", api_key_id="res-key", model=MODEL, max_input_tokens=1000, max_output_tokens=500)
        second = client.reserve("cr-2", api_key_id="res-key", model=MODEL, max_input_tokens=1000, max_output_tokens=500)
        third = client.reserve("cr-3", api_key_id="res-key", model=MODEL, max_input_tokens=1000, max_output_tokens=500)
        assert (first.allowed, second.allowed, third.allowed) == (True, True, False)
        assert first.held == "0.00045" and third.denied_by and "more than is left" in third.reason
        assert client.release("cr-1") == "released" and client.release("cr-1") == "released"
        assert client.reserve("cr-3", api_key_id="res-key", model=MODEL, max_input_tokens=1000,
                              max_output_tokens=500).allowed
    with UsageClient(server.url, "not-the-token-0123456789") as wrong, pytest.raises(Exception, match="401"):
        wrong.reserve("cr-4", api_key_id="res-key", model=MODEL, max_output_tokens=1)


def test_the_litellm_pre_call_hook_reserves_and_a_deny_is_litellms_budget_error(server):
    from litellm.proxy._types import UserAPIKeyAuth

    httpx.post(f"{server.url}/v1/budgets", json={"scope": {"api_key_id": "proxy-key"}, "amount": "0.001",
                                                  "enforce": True}, headers=auth(ADMIN)).raise_for_status()
    client = UsageClient(server.url, INGEST)
    callback = MeteringCallback(client, reserve=True)
    user = UserAPIKeyAuth(api_key="sk-proxy", key_alias="proxy-key")

    async def call(i: int) -> dict:
        data = {"model": f"openai/{MODEL}", "max_tokens": 1000, "litellm_call_id": f"proxy-call-{i}",
                "messages": [{"role": "user", "content": "hello there"}]}
        return await callback.async_pre_call_hook(user, None, data, "acompletion")

    first = asyncio.run(call(1))  # holds up to 1,000 output tokens (0.0006) and the prompt's few tokens
    assert first["metadata"]["metering_request_id"] == "proxy-call-1"
    held = httpx.get(f"{server.url}/v1/reservations/proxy-call-1", headers=auth(INGEST)).json()
    assert held["status"] == "held" and Decimal(held["held"]) > Decimal("0.0006")
    with pytest.raises(litellm.BudgetExceededError, match="more than is left"):
        asyncio.run(call(2))
    asyncio.run(callback.async_post_call_failure_hook({"metadata": {"metering_request_id": "proxy-call-1"}},
                                                      RuntimeError("upstream 500"), user))
    assert httpx.get(f"{server.url}/v1/reservations/proxy-call-1", headers=auth(INGEST)).json()["status"] == "released"
    data = asyncio.run(call(3))  # room again; the call's usage record settles its hold
    kwargs = {"call_type": "acompletion", "model": f"openai/{MODEL}", "litellm_call_id": "proxy-call-3",
              "litellm_params": {"metadata": data["metadata"] | {"user_api_key_alias": "proxy-key"}}}
    record = integration.usage_record(kwargs, litellm.ModelResponse(**mock("chatcmpl-proxy-3", 20, 0, 100, 0)))
    assert record["request_id"] == "proxy-call-3"
    client.send(record)
    assert client.flush(timeout=30)
    client.close()
    assert httpx.get(f"{server.url}/v1/reservations/proxy-call-3", headers=auth(INGEST)).json()["status"] == "settled"
