"""The usage record and the native shapes, from each vendor's documented examples."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from metering.errors import RecordError
from metering.records import parse_record
from tests.conftest import NOW, record

BASE = {"request_id": "r", "occurred_at": "2026-11-25T10:00:00Z", "api_key_id": "k", "model": "m"}


def native(endpoint: str, usage: object, **extra: object) -> dict:
    return {**BASE, "endpoint": endpoint, "usage": usage, **extra}


def tokens(rec) -> tuple:
    return (rec.input_tokens, rec.cached_tokens, rec.cache_write_tokens, rec.output_tokens,
            rec.thinking_tokens, rec.web_search_requests)


# --- OpenAI Chat Completions ------------------------------------------------------------------------

def test_chat_completions_worked_example_from_the_issue():
    rec = parse_record(native("chat.completions", {
        "prompt_tokens": 2006, "completion_tokens": 300,
        "prompt_tokens_details": {"cached_tokens": 1920}, "completion_tokens_details": {"reasoning_tokens": 200},
    }), now=NOW)
    assert tokens(rec) == (2006, 1920, 0, 300, 200, 0)
    assert rec.uncached_input_tokens == 86


def test_chat_completions_openai_documented_example_with_all_detail_fields():
    # The shape OpenAI documents for a chat completion's usage object.
    usage = {
        "prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    }
    assert tokens(parse_record(native("chat.completions", usage), now=NOW)) == (19, 0, 0, 10, 0, 0)


@pytest.mark.parametrize("details", [None, "absent"])
def test_chat_completions_absent_or_null_details_mean_no_cache_and_unknown_thinking(details):
    usage = {"prompt_tokens": 100, "completion_tokens": 50}
    if details is None:
        usage |= {"prompt_tokens_details": None, "completion_tokens_details": None}
    rec = parse_record(native("chat.completions", usage), now=NOW)
    assert tokens(rec) == (100, 0, 0, 50, None, 0)


def test_chat_completions_cache_write_tokens_are_part_of_prompt_tokens():
    rec = parse_record(native("chat.completions", {
        "prompt_tokens": 1000, "completion_tokens": 5,
        "prompt_tokens_details": {"cached_tokens": 600, "cache_write_tokens": 300},
    }), now=NOW)
    assert tokens(rec) == (1000, 600, 300, 5, None, 0)
    assert rec.uncached_input_tokens == 100


# --- OpenAI Responses ---------------------------------------------------------------------------------

def test_responses_openai_documented_example():
    usage = {"input_tokens": 36, "input_tokens_details": {"cached_tokens": 0},
             "output_tokens": 87, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 123}
    assert tokens(parse_record(native("responses", usage), now=NOW)) == (36, 0, 0, 87, 0, 0)


def test_responses_with_cache_hits_and_reasoning():
    usage = {"input_tokens": 5000, "input_tokens_details": {"cached_tokens": 4096},
             "output_tokens": 900, "output_tokens_details": {"reasoning_tokens": 640}}
    assert tokens(parse_record(native("responses", usage), now=NOW)) == (5000, 4096, 0, 900, 640, 0)


def test_responses_null_details():
    usage = {"input_tokens": 10, "output_tokens": 3, "input_tokens_details": None, "output_tokens_details": None}
    assert tokens(parse_record(native("responses", usage), now=NOW)) == (10, 0, 0, 3, None, 0)


# --- Anthropic Messages ------------------------------------------------------------------------------

def test_messages_plain_documented_example():
    rec = parse_record(native("messages", {"input_tokens": 2095, "output_tokens": 503}), now=NOW)
    assert tokens(rec) == (2095, 0, 0, 503, None, 0)


def test_messages_input_excludes_cache_reads_and_writes_so_they_are_added():
    # Anthropic's prompt-caching example: input_tokens counts only tokens after the last breakpoint.
    usage = {"input_tokens": 50, "cache_creation_input_tokens": 248, "cache_read_input_tokens": 1800,
             "output_tokens": 503}
    rec = parse_record(native("messages", usage), now=NOW)
    assert tokens(rec) == (50 + 248 + 1800, 1800, 248, 503, None, 0)
    assert rec.uncached_input_tokens == 50  # nothing counted twice


def test_messages_null_cache_fields_and_web_search_and_thinking():
    usage = {"input_tokens": 10, "cache_creation_input_tokens": None, "cache_read_input_tokens": None,
             "output_tokens": 40, "output_tokens_details": {"thinking_tokens": 25},
             "server_tool_use": {"web_search_requests": 2}}
    assert tokens(parse_record(native("messages", usage), now=NOW)) == (10, 0, 0, 40, 25, 2)


def test_messages_thinking_is_unknown_when_not_reported():
    rec = parse_record(native("messages", {"input_tokens": 1, "output_tokens": 1, "server_tool_use": None}), now=NOW)
    assert rec.thinking_tokens is None


def test_native_and_canonical_forms_of_the_same_usage_are_the_same_record():
    a = parse_record(native("messages", {"input_tokens": 50, "cache_read_input_tokens": 1800,
                                          "cache_creation_input_tokens": 248, "output_tokens": 503}), now=NOW)
    b = parse_record({**BASE, "endpoint": "messages", "input_tokens": 2098, "cached_tokens": 1800,
                      "cache_write_tokens": 248, "output_tokens": 503}, now=NOW)
    assert a == b
    c = parse_record({**BASE, "endpoint": "messages", "input_tokens": 2098, "cached_tokens": 1800,
                      "cache_write_tokens": 248, "output_tokens": 504}, now=NOW)
    assert c != a


def test_timestamps_with_offsets_are_stored_in_utc():
    rec = parse_record(record(occurred_at="2026-11-25T15:30:00+05:30"), now=NOW)
    assert rec.occurred_at == datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def test_defaults_of_optional_fields():
    rec = parse_record({**BASE, "input_tokens": 5, "output_tokens": 6}, now=NOW)
    assert tokens(rec) == (5, 0, 0, 6, None, 0) and rec.endpoint is None and rec.tags is None


# --- every rule of the record: the error names the field ------------------------------------------

FUTURE = (NOW + timedelta(minutes=6)).isoformat()

BAD = [
    ("negative count", record(input_tokens=-1), "input_tokens", "non-negative"),
    ("float count", record(output_tokens=1.5), "output_tokens", "integer"),
    ("integral float", record(output_tokens=3.0), "output_tokens", "integer"),
    ("string count", record(cached_tokens="5"), "cached_tokens", "integer"),
    ("boolean count", record(web_search_requests=True), "web_search_requests", "integer"),
    ("huge count", record(input_tokens=2**31), "input_tokens", "at most"),
    ("cached above input", record(input_tokens=10, cached_tokens=11), "cached_tokens", "exceed input_tokens"),
    ("cached + writes above input", record(input_tokens=10, cached_tokens=6, cache_write_tokens=5),
     "cached_tokens", "exceed input_tokens"),
    ("thinking above output", record(output_tokens=10, thinking_tokens=11), "thinking_tokens", "exceed output_tokens"),
    ("naive timestamp", record(occurred_at="2026-11-25T10:00:00"), "occurred_at", "offset"),
    ("date only", record(occurred_at="2026-11-25"), "occurred_at", "RFC 3339"),
    ("garbage timestamp", record(occurred_at="yesterday"), "occurred_at", "RFC 3339"),
    ("far future", record(occurred_at=FUTURE), "occurred_at", "future"),
    ("missing request_id", record(request_id=...), "request_id", "required"),
    ("missing occurred_at", record(occurred_at=...), "occurred_at", "required"),
    ("missing api_key_id", record(api_key_id=...), "api_key_id", "required"),
    ("missing model", record(model=...), "model", "required"),
    ("missing input_tokens", record(input_tokens=...), "input_tokens", "required"),
    ("missing output_tokens", record(output_tokens=...), "output_tokens", "required"),
    ("empty request_id", record(request_id=""), "request_id", "1 to 200"),
    ("long request_id", record(request_id="x" * 201), "request_id", "1 to 200"),
    ("numeric api_key_id", record(api_key_id=7), "api_key_id", "string"),
    ("unknown endpoint", record(endpoint="completions"), "endpoint", "must be one of"),
    ("unknown field", record(prompt_tokens=5), "prompt_tokens", "unknown field"),
    ("tags not an object", record(tags=["a"]), "tags", "object"),
    ("tag value not a string", record(tags={"p": 1}), "tags.p", "string"),
    ("too many tags", record(tags={f"t{i}": "v" for i in range(21)}), "tags", "at most 20"),
    ("native without endpoint", {**BASE, "usage": {"prompt_tokens": 1, "completion_tokens": 1}}, "endpoint",
     "required"),
    ("native usage not an object", native("responses", [1]), "usage", "object"),
    ("native missing prompt_tokens", native("chat.completions", {"completion_tokens": 1}), "usage.prompt_tokens",
     "required"),
    ("native bad details", native("chat.completions", {"prompt_tokens": 1, "completion_tokens": 1,
                                                        "prompt_tokens_details": 3}), "usage.prompt_tokens_details",
     "object"),
    ("native negative cache read", native("messages", {"input_tokens": 1, "output_tokens": 1,
                                                       "cache_read_input_tokens": -2}),
     "usage.cache_read_input_tokens", "non-negative"),
    ("native cached above prompt", native("chat.completions", {"prompt_tokens": 5, "completion_tokens": 1,
                                                               "prompt_tokens_details": {"cached_tokens": 6}}),
     "cached_tokens", "exceed"),
    ("native reasoning above completion", native("responses", {"input_tokens": 5, "output_tokens": 1,
                                                               "output_tokens_details": {"reasoning_tokens": 2}}),
     "thinking_tokens", "exceed"),
    ("native and token fields", native("responses", {"input_tokens": 5, "output_tokens": 1}, input_tokens=5),
     "input_tokens", "not both"),
    ("not an object", [1, 2], None, "JSON object"),
]


@pytest.mark.parametrize(("case", "body", "field", "phrase"), BAD, ids=[b[0] for b in BAD])
def test_each_rule_of_the_record_is_enforced_with_a_clear_error(case, body, field, phrase):
    with pytest.raises(RecordError) as info:
        parse_record(body, now=NOW)
    assert info.value.field == field
    assert phrase in info.value.message
    if field:
        assert info.value.message.startswith(field)


def test_timestamp_up_to_five_minutes_ahead_is_accepted():
    rec = parse_record(record(occurred_at=(NOW + timedelta(minutes=4)).isoformat()), now=NOW)
    assert rec.occurred_at > NOW
