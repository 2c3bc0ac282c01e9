"""The canonical usage record, and the endpoints' native `usage` shapes -> canonical.

Pure functions: no I/O, no clock of their own (the caller passes `now`). Every rule of
CONTRACT.md "The usage record" is checked here, and a broken rule raises `RecordError`
naming the field (a dotted path inside a native `usage` object).

Token semantics are inclusive, as OpenAI reports them:
    input_tokens  = uncached input + cached_tokens + cache_write_tokens
    output_tokens = visible output + thinking_tokens
so the token classes partition what the source billed and nothing is counted twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from metering.errors import RecordError

ENDPOINTS = ("chat.completions", "responses", "messages")
MAX_TOKENS = 2**31 - 1  # per record and class; far above any real request, below overflow
MAX_STRING = 200
MAX_TAGS = 20
MAX_TAG_KEY = 64
MAX_TAG_VALUE = 256
FUTURE_TOLERANCE = timedelta(minutes=5)
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)  # the first instant a record may have occurred at

TOKEN_FIELDS = (
    "input_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "output_tokens",
    "thinking_tokens",
    "web_search_requests",
)
COMMON_FIELDS = {"request_id", "occurred_at", "api_key_id", "model", "endpoint", "tags"}
CANONICAL_FIELDS = COMMON_FIELDS | set(TOKEN_FIELDS)
NATIVE_FIELDS = COMMON_FIELDS | {"usage", "web_search_requests"}


@dataclass(frozen=True, slots=True)
class UsageRecord:
    request_id: str
    occurred_at: datetime  # aware, UTC
    api_key_id: str
    model: str
    endpoint: str | None
    input_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    output_tokens: int
    thinking_tokens: int | None
    web_search_requests: int
    tags: dict[str, str] | None

    @property
    def uncached_input_tokens(self) -> int:
        return self.input_tokens - self.cached_tokens - self.cache_write_tokens

    def to_canonical(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "request_id": self.request_id,
            "occurred_at": self.occurred_at.isoformat().replace("+00:00", "Z"),
            "api_key_id": self.api_key_id,
            "model": self.model,
        }
        if self.endpoint is not None:
            out["endpoint"] = self.endpoint
        for name in TOKEN_FIELDS:
            out[name] = getattr(self, name)
        if self.tags:
            out["tags"] = dict(self.tags)
        return out


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_micros(ts: datetime) -> int:
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


# --- field checks -------------------------------------------------------------------------


def _string(obj: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise RecordError(name, "is required")
        return None
    if not isinstance(value, str):
        raise RecordError(name, f"must be a string, got {_type_name(value)}")
    if not 1 <= len(value) <= MAX_STRING:
        raise RecordError(name, f"must be 1 to {MAX_STRING} characters, got {len(value)}")
    return value


def _count(value: Any, path: str, *, default: int | None = 0, required: bool = False) -> int | None:
    """A non-negative integer token or request count."""
    if value is None:
        if required:
            raise RecordError(path, "is required")
        return default
    # bool is an int subclass in Python; JSON true/false is not a count.
    if isinstance(value, bool) or not isinstance(value, int):
        raise RecordError(path, f"must be a non-negative integer, got {_type_name(value)} {value!r}")
    if value < 0:
        raise RecordError(path, f"must be a non-negative integer, got {value}")
    if value > MAX_TOKENS:
        raise RecordError(path, f"must be at most {MAX_TOKENS}, got {value}")
    return value


def _object(value: Any, path: str) -> dict[str, Any]:
    """An optional details object: absent or null is an empty object."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RecordError(path, f"must be an object or null, got {_type_name(value)}")
    return value


def _type_name(value: Any) -> str:
    return {
        bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object",
    }.get(type(value), type(value).__name__) if value is not None else "null"


def parse_timestamp(value: Any, path: str = "occurred_at") -> datetime:
    """RFC 3339 with an offset -> aware UTC datetime. Naive timestamps are rejected."""
    if not isinstance(value, str):
        raise RecordError(path, f"must be an RFC 3339 timestamp string, got {_type_name(value)}")
    text = value.strip()
    if len(text) < 11 or text[10] not in "Tt ":
        raise RecordError(path, f"must be an RFC 3339 timestamp with a time and an offset, got {value!r}")
    try:
        ts = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1] in "zZ" else text)
    except ValueError:
        raise RecordError(path, f"is not an RFC 3339 timestamp: {value!r}") from None
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise RecordError(path, f"has no UTC offset (naive timestamps are ambiguous): {value!r}")
    try:
        return ts.astimezone(UTC)
    except OverflowError:  # year 1 with a positive offset, year 9999 with a negative one
        raise RecordError(path, f"is out of range: {value!r}") from None


def check_occurred_at(ts: datetime, *, now: datetime, raw: Any) -> datetime:
    """The record's time window: from 2000-01-01T00:00:00Z to 5 minutes after now."""
    if ts < EARLIEST:
        raise RecordError("occurred_at", f"is before 2000-01-01T00:00:00Z: {raw!r}")
    if ts > now + FUTURE_TOLERANCE:
        raise RecordError("occurred_at", f"is more than 5 minutes in the future: {raw!r}")
    return ts


def check_tags(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise RecordError("tags", f"must be an object of strings, got {_type_name(value)}")
    if len(value) > MAX_TAGS:
        raise RecordError("tags", f"must have at most {MAX_TAGS} entries, got {len(value)}")
    for key, item in value.items():
        if not 1 <= len(key) <= MAX_TAG_KEY:
            raise RecordError("tags", f"key {key[:80]!r} must be 1 to {MAX_TAG_KEY} characters")
        if not isinstance(item, str):
            raise RecordError(f"tags.{key}", f"must be a string, got {_type_name(item)}")
        if len(item) > MAX_TAG_VALUE:
            raise RecordError(f"tags.{key}", f"must be at most {MAX_TAG_VALUE} characters")
    return dict(value) or None


# --- native usage shapes ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tokens:
    input_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    output_tokens: int
    thinking_tokens: int | None
    web_search_requests: int | None = None  # None: the shape does not report it


def normalize_chat_completions(usage: dict[str, Any]) -> Tokens:
    """OpenAI Chat Completions: prompt_tokens includes cached and cache-write tokens;
    completion_tokens includes reasoning tokens. Details objects may be absent or null."""
    prompt_details = _object(usage.get("prompt_tokens_details"), "usage.prompt_tokens_details")
    completion_details = _object(usage.get("completion_tokens_details"), "usage.completion_tokens_details")
    return Tokens(
        input_tokens=_count(usage.get("prompt_tokens"), "usage.prompt_tokens", required=True),
        cached_tokens=_count(prompt_details.get("cached_tokens"), "usage.prompt_tokens_details.cached_tokens"),
        cache_write_tokens=_count(
            prompt_details.get("cache_write_tokens"), "usage.prompt_tokens_details.cache_write_tokens"
        ),
        output_tokens=_count(usage.get("completion_tokens"), "usage.completion_tokens", required=True),
        thinking_tokens=_count(
            completion_details.get("reasoning_tokens"),
            "usage.completion_tokens_details.reasoning_tokens",
            default=None,
        ),
    )


def normalize_responses(usage: dict[str, Any]) -> Tokens:
    """OpenAI Responses: input_tokens includes cached and cache-write tokens; output_tokens
    includes reasoning tokens."""
    input_details = _object(usage.get("input_tokens_details"), "usage.input_tokens_details")
    output_details = _object(usage.get("output_tokens_details"), "usage.output_tokens_details")
    return Tokens(
        input_tokens=_count(usage.get("input_tokens"), "usage.input_tokens", required=True),
        cached_tokens=_count(input_details.get("cached_tokens"), "usage.input_tokens_details.cached_tokens"),
        cache_write_tokens=_count(
            input_details.get("cache_write_tokens"), "usage.input_tokens_details.cache_write_tokens"
        ),
        output_tokens=_count(usage.get("output_tokens"), "usage.output_tokens", required=True),
        thinking_tokens=_count(
            output_details.get("reasoning_tokens"), "usage.output_tokens_details.reasoning_tokens", default=None
        ),
    )


def normalize_messages(usage: dict[str, Any]) -> Tokens:
    """Anthropic Messages: input_tokens EXCLUDES cache reads and writes, so they are added back."""
    uncached = _count(usage.get("input_tokens"), "usage.input_tokens", required=True)
    cache_read = _count(usage.get("cache_read_input_tokens"), "usage.cache_read_input_tokens")
    cache_write = _count(usage.get("cache_creation_input_tokens"), "usage.cache_creation_input_tokens")
    output_details = _object(usage.get("output_tokens_details"), "usage.output_tokens_details")
    server_tools = _object(usage.get("server_tool_use"), "usage.server_tool_use")
    total_input = uncached + cache_read + cache_write
    if total_input > MAX_TOKENS:
        raise RecordError("usage.input_tokens", f"input plus cache tokens must be at most {MAX_TOKENS}")
    return Tokens(
        input_tokens=total_input,
        cached_tokens=cache_read,
        cache_write_tokens=cache_write,
        output_tokens=_count(usage.get("output_tokens"), "usage.output_tokens", required=True),
        thinking_tokens=_count(
            output_details.get("thinking_tokens"), "usage.output_tokens_details.thinking_tokens", default=None
        ),
        web_search_requests=_count(
            server_tools.get("web_search_requests"), "usage.server_tool_use.web_search_requests", default=None
        ),
    )


NORMALIZERS = {
    "chat.completions": normalize_chat_completions,
    "responses": normalize_responses,
    "messages": normalize_messages,
}


# --- the record -----------------------------------------------------------------------------


def parse_record(obj: Any, *, now: datetime) -> UsageRecord:
    """Validate one record (canonical or native form) and return it in canonical form."""
    if not isinstance(obj, dict):
        raise RecordError(None, f"a record must be a JSON object, got {_type_name(obj)}")
    native = "usage" in obj
    allowed = NATIVE_FIELDS if native else CANONICAL_FIELDS
    unknown = [name for name in obj if name not in allowed]
    if unknown:
        if native and any(name in TOKEN_FIELDS for name in unknown):
            raise RecordError(unknown[0], "give either `usage` (native form) or token fields, not both")
        raise RecordError(unknown[0], "unknown field")

    request_id = _string(obj, "request_id")
    if obj.get("occurred_at") is None:
        raise RecordError("occurred_at", "is required")
    occurred_at = check_occurred_at(parse_timestamp(obj["occurred_at"]), now=now, raw=obj["occurred_at"])
    api_key_id = _string(obj, "api_key_id")
    model = _string(obj, "model")
    endpoint = obj.get("endpoint")
    if endpoint is not None and endpoint not in NORMALIZERS:
        raise RecordError("endpoint", f"must be one of {', '.join(ENDPOINTS)}, got {endpoint!r}")
    tags = check_tags(obj.get("tags"))

    if native:
        if endpoint is None:
            raise RecordError("endpoint", "is required with `usage`: it names the usage shape")
        usage = obj["usage"]
        if not isinstance(usage, dict):
            raise RecordError("usage", f"must be an object, got {_type_name(usage)}")
        tokens = NORMALIZERS[endpoint](usage)
        web_search = _count(obj.get("web_search_requests"), "web_search_requests", default=None)
        if web_search is not None and tokens.web_search_requests is not None:
            raise RecordError("web_search_requests", "is given twice: at the top level and inside `usage`")
        web_search = web_search if web_search is not None else (tokens.web_search_requests or 0)
    else:
        tokens = Tokens(
            input_tokens=_count(obj.get("input_tokens"), "input_tokens", required=True),
            cached_tokens=_count(obj.get("cached_tokens"), "cached_tokens"),
            cache_write_tokens=_count(obj.get("cache_write_tokens"), "cache_write_tokens"),
            output_tokens=_count(obj.get("output_tokens"), "output_tokens", required=True),
            thinking_tokens=_count(obj.get("thinking_tokens"), "thinking_tokens", default=None),
        )
        web_search = _count(obj.get("web_search_requests"), "web_search_requests")

    prefix = "usage: " if native else ""
    if tokens.cached_tokens + tokens.cache_write_tokens > tokens.input_tokens:
        raise RecordError(
            "cached_tokens",
            f"{prefix}cached_tokens ({tokens.cached_tokens}) + cache_write_tokens "
            f"({tokens.cache_write_tokens}) exceed input_tokens ({tokens.input_tokens})",
        )
    if tokens.thinking_tokens is not None and tokens.thinking_tokens > tokens.output_tokens:
        raise RecordError(
            "thinking_tokens",
            f"{prefix}thinking_tokens ({tokens.thinking_tokens}) exceed output_tokens ({tokens.output_tokens})",
        )
    return UsageRecord(
        request_id=request_id,  # type: ignore[arg-type]
        occurred_at=occurred_at,
        api_key_id=api_key_id,  # type: ignore[arg-type]
        model=model,  # type: ignore[arg-type]
        endpoint=endpoint,
        input_tokens=tokens.input_tokens,
        cached_tokens=tokens.cached_tokens,
        cache_write_tokens=tokens.cache_write_tokens,
        output_tokens=tokens.output_tokens,
        thinking_tokens=tokens.thinking_tokens,
        web_search_requests=web_search,  # type: ignore[arg-type]
        tags=tags,
    )
