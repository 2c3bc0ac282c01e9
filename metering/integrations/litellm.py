"""LiteLLM -> metering: a `CustomLogger` that turns each successful call into a usage record and
sends it through `metering.client.UsageClient`.

LiteLLM proxy (config.yaml), with METERING_URL, METERING_INGEST_TOKEN and (recommended)
METERING_SPOOL_DIR in the proxy's environment:

    litellm_settings:
      callbacks: ["metering.integrations.litellm.handler"]

LiteLLM SDK:

    import litellm
    from metering.client import UsageClient
    from metering.integrations.litellm import MeteringCallback

    litellm.callbacks = [MeteringCallback(UsageClient(url, ingest_token, spool_dir="/var/spool/metering"))]

The record (see `usage_record`):
- request_id: the response's id (`chatcmpl-...`, `resp_...`, `msg_...`), else LiteLLM's call id.
- occurred_at: the call's end, aware UTC.
- model: the model the caller asked for: the proxy's public model name (`model_group`) when there
  is one, else the requested model. A leading `provider/` segment is stripped when it names a
  LiteLLM provider (`openai/minimax-m2-7` -> `minimax-m2-7`, `anthropic/claude-x` -> `claude-x`);
  other slashes stay (`meta-llama/Llama-3-8b` keeps its organisation). The response's model (often
  a dated snapshot) is not used: the gateway's rate card prices what it sells.
- endpoint and usage: the native usage object exactly as LiteLLM hands it to callbacks, and the
  endpoint naming its shape: `chat.completions` (`prompt_tokens`...: what LiteLLM logs for chat
  and text completions, and also for Responses and Anthropic Messages calls, which it converts),
  `responses` (`input_tokens` with `input_tokens_details`), `messages` (Anthropic's `input_tokens`,
  which excludes cache reads and writes). Only LLM calls are reported (completion, text completion,
  responses, Anthropic messages); embeddings, images, audio and the rest are not.
- api_key_id: the proxy's key alias, else its key hash (`user_api_key_alias`, `user_api_key_hash`
  in LiteLLM's metadata; an SDK caller can pass them in `metadata=`), else `default_api_key_id`.
- tags (at most 20, string values cut to 256 characters): `project`, `team`, `org`, `user`,
  `end_user` from the proxy's metadata, then the string pairs of `spend_logs_metadata`.
Cache hits (LiteLLM answered from its own cache, nothing billed upstream) are not reported.
Failed calls are not reported.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from litellm import provider_list
from litellm.integrations.custom_logger import CustomLogger

from metering.client import UsageClient
from metering.records import MAX_STRING, MAX_TAG_KEY, MAX_TAG_VALUE, MAX_TAGS
from metering.settings import GatewaySettings

log = logging.getLogger("metering.integrations.litellm")

DEFAULT_API_KEY_ID = "litellm"
RESERVATION_KEY = "metering_request_id"  # in a call's metadata: the request_id its reservation holds under
DEFAULT_MAX_OUTPUT_TOKENS = 4096  # a call that names no max_tokens is held at this many output tokens
CALL_TYPES = frozenset({"completion", "acompletion", "text_completion", "atext_completion", "responses", "aresponses",
                        "anthropic_messages", "aanthropic_messages"})
PROVIDERS = frozenset(str(getattr(p, "value", p)) for p in provider_list)
# metadata field(s) -> tag name, in order of precedence; fixed tags come before spend_logs_metadata
TAG_SOURCES = (
    ("project", ("user_api_key_project_alias", "user_api_key_project_id")),
    ("team", ("user_api_key_team_alias", "team_alias", "user_api_key_team_id", "team_id")),
    ("org", ("user_api_key_org_alias", "user_api_key_org_id")),
    ("user", ("user_api_key_user_id",)),
    ("end_user", ("user_api_key_end_user_id",)),
)


def _get(obj: Any, name: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _plain(obj: Any) -> Any:
    """A pydantic model (LiteLLM's Usage) or mapping -> plain JSON-able dict, nulls left out."""
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json", exclude_none=True)
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items() if v is not None}
    return obj


def model_name(model: str, provider: str | None = None) -> str:
    """Strip a leading `provider/` when it names a LiteLLM provider (or the call's own provider)."""
    head, sep, rest = model.partition("/")
    if sep and rest and (head == provider or head in PROVIDERS):
        return rest
    return model


def usage_shape(usage: Mapping[str, Any]) -> str:
    """The endpoint whose usage shape this is (CONTRACT.md, native form)."""
    if "prompt_tokens" in usage:
        return "chat.completions"
    if "input_tokens_details" in usage:
        return "responses"
    return "messages"  # Anthropic: input_tokens beside cache_read_input_tokens / cache_creation_input_tokens


def _occurred_at(logging_object: Mapping[str, Any], end_time: Any) -> str:
    end = logging_object.get("endTime")
    if isinstance(end, int | float):
        return datetime.fromtimestamp(end, UTC).isoformat()
    if isinstance(end_time, datetime):
        # LiteLLM's end_time is naive local time (datetime.now()); astimezone reads a naive value as local.
        return end_time.astimezone(UTC).isoformat()
    return datetime.now(UTC).isoformat()


def _tags(metadata: Mapping[str, Any], logging_object: Mapping[str, Any]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for tag, fields in TAG_SOURCES:
        value = next((metadata.get(f) for f in fields if metadata.get(f)), None)
        if tag == "end_user":
            value = value or logging_object.get("end_user")
        if value is not None and value != "":
            tags[tag] = str(value)[:MAX_TAG_VALUE]
    extra = metadata.get("spend_logs_metadata")
    if isinstance(extra, Mapping):
        for key, value in extra.items():
            if len(tags) >= MAX_TAGS:
                break
            if (isinstance(key, str) and 1 <= len(key) <= MAX_TAG_KEY and key not in tags
                    and isinstance(value, str | int | float | bool)):
                tags[key] = str(value)[:MAX_TAG_VALUE]
    return dict(list(tags.items())[:MAX_TAGS])


def _web_searches(usage: Mapping[str, Any]) -> int:
    tools = usage.get("server_tool_use") or {}
    details = usage.get("prompt_tokens_details") or {}
    value = tools.get("web_search_requests") or details.get("web_search_requests") or 0
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def usage_record(kwargs: Mapping[str, Any], response_obj: Any, end_time: Any = None, *,
                 default_api_key_id: str = DEFAULT_API_KEY_ID) -> dict[str, Any] | None:
    """The usage record of one successful LiteLLM call, or None when there is nothing to bill
    (a cache hit, a call type without token usage, a response without usage)."""
    logging_object = kwargs.get("standard_logging_object") or {}
    if kwargs.get("cache_hit") or logging_object.get("cache_hit"):
        return None
    call_type = str(kwargs.get("call_type") or logging_object.get("call_type") or "")
    usage = _get(response_obj, "usage")
    if call_type not in CALL_TYPES or usage is None:
        log.debug("litellm call %r (%s) has no token usage to report", call_type, type(response_obj).__name__)
        return None
    usage = _plain(usage)
    endpoint = usage_shape(usage)
    metadata = logging_object.get("metadata") or (kwargs.get("litellm_params") or {}).get("metadata") or {}
    reserved = ((kwargs.get("litellm_params") or {}).get("metadata") or {}).get(RESERVATION_KEY)
    request_id = reserved or _get(response_obj, "id") or logging_object.get("id") or kwargs.get("litellm_call_id")
    model = logging_object.get("model_group") or kwargs.get("model") or logging_object.get("model")
    api_key_id = metadata.get("user_api_key_alias") or metadata.get("user_api_key_hash") or default_api_key_id
    record: dict[str, Any] = {
        "request_id": str(request_id)[:MAX_STRING],
        "occurred_at": _occurred_at(logging_object, end_time),
        "api_key_id": str(api_key_id),
        "model": model_name(str(model), kwargs.get("custom_llm_provider")),
        "endpoint": endpoint,
        "usage": usage,
    }
    if endpoint != "messages" and (searches := _web_searches(usage)):
        record["web_search_requests"] = searches  # the Messages shape carries its own
    tags = _tags(metadata, logging_object)
    if tags:
        record["tags"] = tags
    return record


class MeteringCallback(CustomLogger):
    """LiteLLM callback: every successful call (sync or async, streamed or not) becomes one usage
    record, sent through a `UsageClient`. Without a client, one is made on first use from
    METERING_URL, METERING_INGEST_TOKEN and METERING_SPOOL_DIR (one per process: a proxy's worker
    processes each get their own, and with a spool each its own lane of the spool directory)."""

    def __init__(self, client: UsageClient | None = None, *, settings: GatewaySettings | None = None,
                 default_api_key_id: str = DEFAULT_API_KEY_ID, reserve: bool = False,
                 default_max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if client is None and settings is None:
            settings = GatewaySettings.from_env()  # fail at start-up, not at the first call
        self.reserve = reserve or bool(settings is not None and settings.reserve)
        self.default_max_output_tokens = default_max_output_tokens
        self._client = client
        self._settings = settings
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self.default_api_key_id = default_api_key_id
        # LiteLLM keeps one callback per class and public attributes: callbacks to different services differ.
        self.service_url = client.url if client is not None else settings.url  # type: ignore[union-attr]

    @property
    def client(self) -> UsageClient:
        if self._client is None or (self._settings is not None and self._pid != os.getpid()):
            with self._lock:
                if self._client is None or self._pid != os.getpid():
                    assert self._settings is not None
                    self._client = UsageClient(self._settings.url, self._settings.ingest_token,
                                               spool_dir=self._settings.spool_dir)
                    self._pid = os.getpid()
        return self._client

    def _record(self, kwargs: Any, response_obj: Any, end_time: Any) -> dict[str, Any] | None:
        try:
            return usage_record(kwargs, response_obj, end_time, default_api_key_id=self.default_api_key_id)
        except Exception:
            log.exception("metering: could not make a usage record of a LiteLLM call (id %s)",
                          _get(response_obj, "id") or kwargs.get("litellm_call_id"))
            return None

    def _send(self, record: dict[str, Any]) -> None:
        try:
            self.client.send(record)
        except Exception:
            # Never silent: the record goes to the log, whole, so it can be replayed.
            log.exception("metering: usage record NOT queued: %s", orjson.dumps(record).decode())

    def log_success_event(self, kwargs, response_obj, start_time, end_time):
        record = self._record(kwargs, response_obj, end_time)
        if record is not None:
            self._send(record)

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
        record = self._record(kwargs, response_obj, end_time)
        if record is None:
            return
        if self.client.durable:
            await asyncio.to_thread(self._send, record)  # an fsync: off the event loop
        else:
            self._send(record)


    # --- budget reservations: the proxy asks before each call (reserve=True) -------------------------

    async def async_pre_call_hook(self, user_api_key_dict: Any, cache: Any, data: dict, call_type: Any) -> dict:
        """Before the proxy calls the model: reserve the most the call can cost (its prompt's tokens and
        its max_tokens) under the call's own id; a deny becomes LiteLLM's BudgetExceededError, so the
        caller gets the proxy's budget error and the model is never called. The usage record settles
        the hold (it carries the same request_id); a failed call releases it."""
        if not self.reserve or str(call_type).lstrip("a") not in _RESERVED_CALLS:
            return data
        import litellm

        request_id = str(data.get("litellm_call_id") or uuid.uuid4())
        data["litellm_call_id"] = request_id
        metadata = data.setdefault("metadata", {})
        metadata[RESERVATION_KEY] = request_id
        api_key_id = (_get(user_api_key_dict, "key_alias") or _get(user_api_key_dict, "token")
                      or self.default_api_key_id)
        model = model_name(str(data.get("model") or ""))
        max_output = int(data.get("max_tokens") or data.get("max_completion_tokens") or self.default_max_output_tokens)
        try:
            max_input = int(litellm.token_counter(model=str(data.get("model") or ""), messages=data.get("messages") or []))
        except Exception:  # an unknown tokenizer: the hold covers the output only, and the log says so
            log.warning("metering: could not count the prompt's tokens of call %s; holding its output only", request_id)
            max_input = 0
        answer = await asyncio.to_thread(self.client.reserve, request_id, api_key_id=str(api_key_id), model=model,
                                         max_input_tokens=max_input, max_output_tokens=max_output)
        if not answer.allowed:
            denied = next((b for b in answer.budgets if b["id"] in answer.denied_by), None)
            # LiteLLM's error takes floats; they are shown, never computed with.
            spent = float(Decimal(denied["spent"]) + Decimal(denied["held"])) if denied else 0.0
            limit = float(Decimal(denied["amount"])) if denied else 0.0
            raise litellm.BudgetExceededError(current_cost=spent, max_budget=limit,
                                              message=f"metering: {answer.reason}")
        return data

    async def async_post_call_failure_hook(self, request_data: dict, original_exception: Exception,
                                           user_api_key_dict: Any, traceback_str: str | None = None) -> None:
        """The call failed after its reservation: give the hold back."""
        request_id = ((request_data or {}).get("metadata") or {}).get(RESERVATION_KEY)
        if self.reserve and request_id and not isinstance(original_exception, _budget_error()):
            try:
                await asyncio.to_thread(self.client.release, request_id)
            except Exception:
                log.exception("metering: could not release the hold of failed call %s (it expires by itself)",
                              request_id)


_RESERVED_CALLS = {"completion", "text_completion", "responses", "anthropic_messages"}


def _budget_error() -> type:
    import litellm

    return litellm.BudgetExceededError


_handler: MeteringCallback | None = None
_handler_lock = threading.Lock()


def __getattr__(name: str) -> Any:
    """`handler`, the module-level instance LiteLLM's proxy config names, made on first access
    (importing this module reads no environment and starts no thread)."""
    global _handler
    if name == "handler":
        with _handler_lock:
            if _handler is None:
                _handler = MeteringCallback()
        return _handler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
