"""The usage record the LiteLLM callback makes of one call (metering.integrations.litellm.usage_record),
checked against the service's own record rules. Calls through LiteLLM itself: tests/e2e/test_litellm.py."""

from __future__ import annotations

import os
from datetime import UTC, datetime

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # before litellm is imported: no cost map download

import pytest
from litellm.types.utils import ModelResponse

from metering.integrations.litellm import model_name, usage_record, usage_shape
from metering.records import MAX_TAG_VALUE, MAX_TAGS, parse_record

pytestmark = pytest.mark.filterwarnings("ignore:.*using the `ReadOnly` qualifier:UserWarning")
END = 1795600000.25  # 2026-11-25T...Z as LiteLLM's standard logging payload carries it (epoch seconds)
NOW = datetime(2026, 11, 26, tzinfo=UTC)


def response(**usage) -> ModelResponse:
    return ModelResponse(id="chatcmpl-abc", model="MiniMax-M2.7",
                         usage={"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120, **usage})


def kwargs(metadata: dict | None = None, **extra) -> dict:
    return {"call_type": "completion", "model": "minimax-m2-7", "custom_llm_provider": "openai",
            "standard_logging_object": {"endTime": END, "model_group": "", "metadata": metadata or {}, **extra}}


def test_model_name_strips_a_provider_prefix_only():
    assert model_name("openai/minimax-m2-7") == "minimax-m2-7"
    assert model_name("anthropic/claude-sonnet-4") == "claude-sonnet-4"
    assert model_name("meta-llama/Llama-3-8b") == "meta-llama/Llama-3-8b"  # an organisation, not a provider
    assert model_name("together_ai/meta-llama/Llama-3-8b") == "meta-llama/Llama-3-8b"
    assert model_name("my-gateway/model", provider="my-gateway") == "model"
    assert model_name("minimax-m2-7") == "minimax-m2-7"


def test_record_is_a_valid_native_record_with_the_call_end_in_utc():
    rec = usage_record(kwargs({"user_api_key_alias": "key-a"}), response(), None)
    assert rec["request_id"] == "chatcmpl-abc" and rec["api_key_id"] == "key-a" and rec["model"] == "minimax-m2-7"
    assert rec["occurred_at"] == datetime.fromtimestamp(END, UTC).isoformat()
    parsed = parse_record(rec, now=NOW)  # the service's rules accept it
    assert (parsed.input_tokens, parsed.output_tokens, parsed.endpoint) == (100, 20, "chat.completions")


def test_proxy_model_group_is_the_model_the_gateway_sells():
    rec = usage_record(kwargs(model_group="openai/minimax-m2-7"), response(), None)
    assert rec["model"] == "minimax-m2-7"


def test_naive_end_time_is_read_as_local_time():
    k = kwargs()
    del k["standard_logging_object"]["endTime"]
    end = datetime(2026, 11, 25, 10, 0)  # naive, as LiteLLM's datetime.now() gives it
    rec = usage_record(k, response(), end)
    assert rec["occurred_at"] == end.astimezone(UTC).isoformat()


def test_api_key_falls_back_from_alias_to_hash_to_the_default():
    assert usage_record(kwargs({"user_api_key_hash": "h" * 64}), response())["api_key_id"] == "h" * 64
    assert usage_record(kwargs({"user_api_key_alias": "a", "user_api_key_hash": "h"}), response())["api_key_id"] == "a"
    assert usage_record(kwargs(), response(), default_api_key_id="gw")["api_key_id"] == "gw"


def test_tags_stay_within_the_record_limits():
    metadata = {"user_api_key_team_id": "team-1", "user_api_key_end_user_id": "u" * 300,
                "spend_logs_metadata": {f"k{i}": i for i in range(30)} | {"x" * 65: "too long a key", "obj": {"a": 1}}}
    rec = usage_record(kwargs(metadata), response())
    assert len(rec["tags"]) == MAX_TAGS
    assert rec["tags"]["team"] == "team-1" and rec["tags"]["end_user"] == "u" * MAX_TAG_VALUE
    assert rec["tags"]["k0"] == "0" and "obj" not in rec["tags"]
    parse_record(rec, now=NOW)


def test_cache_hits_and_calls_without_token_usage_are_not_reported():
    assert usage_record({**kwargs(), "cache_hit": True}, response()) is None
    assert usage_record({**kwargs(), "call_type": "embedding"}, response()) is None
    assert usage_record(kwargs(), {"id": "x"}) is None


def test_usage_shapes_are_told_apart_by_their_fields():
    assert usage_shape({"prompt_tokens": 1, "completion_tokens": 2}) == "chat.completions"
    assert usage_shape({"input_tokens": 1, "output_tokens": 2, "input_tokens_details": {"cached_tokens": 0}}) == "responses"
    assert usage_shape({"input_tokens": 1, "output_tokens": 2, "cache_read_input_tokens": 5}) == "messages"
    anthropic = {"id": "msg_1", "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 100,
                                          "cache_creation_input_tokens": 20, "server_tool_use": {"web_search_requests": 2}}}
    rec = usage_record({**kwargs(), "call_type": "anthropic_messages"}, anthropic)
    parsed = parse_record(rec, now=NOW)
    assert (parsed.input_tokens, parsed.cached_tokens, parsed.cache_write_tokens, parsed.web_search_requests) == (
        130, 100, 20, 2)


def test_web_searches_of_a_chat_shaped_usage_are_carried_beside_it():
    rec = usage_record(kwargs(), response(server_tool_use={"web_search_requests": 3}))
    assert rec["web_search_requests"] == 3
    assert parse_record(rec, now=NOW).web_search_requests == 3
