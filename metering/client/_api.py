"""The service's HTTP API as a gateway uses it, and what each answer means for the records sent.

One `httpx.Client` (a keep-alive connection pool, safe to share between threads) carries every
call: the background sender's `POST /v1/usage`, and the plain synchronous calls on the request path,
budget reservations (`POST /v1/reservations`, `DELETE /v1/reservations/{id}`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import quote

import httpx
import orjson

MAX_RECORDS = 10_000  # the service's limits per request (CONTRACT.md, POST /v1/usage)
MAX_BATCH_BYTES = 8 * 1024 * 1024  # under the service's 10 MiB, with room for a proxy's framing
MAX_RECORD_BYTES = 1024 * 1024  # a usage record is a few hundred bytes; this is surely a mistake
FATAL = {401: "unauthorized", 403: "forbidden", 404: "not found (is the URL the service's base URL?)",
         405: "method not allowed (is the URL the service's base URL?)"}


class Api:
    def __init__(self, url: str, token: str, *, timeout: float = 10.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {url!r}")
        if not token:
            raise ValueError("token is empty: give the service's ingest token")
        self.url = url.rstrip("/")
        self.http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}", "User-Agent": "metering-client"},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
        )

    def post_usage(self, lines: list[bytes]) -> httpx.Response:
        body = b"\n".join(lines) + b"\n"
        return self.http.post("/v1/usage", content=body, headers={"Content-Type": "application/x-ndjson"})

    def reserve(self, body: dict) -> httpx.Response:
        return self.http.post("/v1/reservations", content=orjson.dumps(body),
                              headers={"Content-Type": "application/json"})

    def release(self, request_id: str) -> httpx.Response:
        return self.http.delete(f"/v1/reservations/{quote(request_id, safe='')}")

    def close(self) -> None:
        self.http.close()


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an answer to a batch means.

    kind: "done" (the service settled every record: stored, duplicate, or rejected in `errors`),
          "split" (the batch as a whole was refused: send it in halves; a single record is set aside),
          "retry" (try the same batch again later: after `delay` seconds when the service said so),
          "fatal" (the client is misconfigured: stop sending, keep the records, surface `message`).
    """

    kind: str
    status: int | None = None
    message: str = ""
    delay: float | None = None
    errors: dict[int, str] = field(default_factory=dict)
    accepted: int = 0
    duplicates: int = 0


def retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _message(response: httpx.Response) -> str:
    try:
        error = orjson.loads(response.content).get("error", {})
        return f"{response.status_code} {error.get('code', '')}: {error.get('message', '')}".strip()
    except (orjson.JSONDecodeError, AttributeError):
        return f"{response.status_code} {response.reason_phrase}: {response.text[:200]}"


def classify(response: httpx.Response) -> Outcome:
    status = response.status_code
    if status in (200, 422):
        try:
            body = orjson.loads(response.content)
            errors = {int(e["index"]): str(e.get("error") or "rejected") for e in body.get("errors") or ()}
            counts = {"accepted": int(body.get("accepted") or 0), "duplicates": int(body.get("duplicates") or 0)}
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
            errors, counts = None, {}
        if errors is not None and (status == 200 or errors):
            return Outcome("done", status, errors=errors, **counts)
        if status == 200:
            return Outcome("done", status)
        return Outcome("split", status, _message(response))  # a 422 without per-record errors
    if status in (400, 413):
        return Outcome("split", status, _message(response))
    if status in FATAL:
        return Outcome("fatal", status, f"{_message(response)} ({FATAL[status]})")
    if status in (429, 503):
        return Outcome("retry", status, _message(response), delay=retry_after(response.headers.get("retry-after")))
    return Outcome("retry", status, _message(response))  # 408, 5xx, and anything unexpected


def backoff(attempt: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with jitter: uniform in [d/2, d] with d = min(cap, base * 2**attempt)."""
    delay = min(cap, base * 2 ** min(attempt, 30))
    return rng.uniform(delay / 2, delay)
