"""UsageClient: a gateway reports usage records; a background thread delivers them in batches."""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import random
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from metering.client._api import MAX_BATCH_BYTES, MAX_RECORD_BYTES, MAX_RECORDS, Api, Outcome, backoff, classify
from metering.client._spool import MemoryBuffer, Rejected, Spool

log = logging.getLogger("metering.client")


class ClientError(Exception):
    """The client cannot deliver: the service refused its token (401/403) or its URL (404/405).
    The records are kept (in the spool, or in memory: `unsent()`); nothing is dropped."""


@dataclass(frozen=True, slots=True)
class Reservation:
    """The service's decision: `allowed` (the hold is `held` USD) or not (`reason`, `denied_by`)."""

    request_id: str
    allowed: bool
    held: str
    reason: str | None = None
    denied_by: tuple[str, ...] = ()
    budgets: tuple[dict, ...] = ()


class _Abandon(Exception):
    """Internal: close() stopped waiting for a batch that cannot be delivered yet."""


class _Fatal(Exception):
    """Internal: the service refused the client; stop sending."""


class UsageClient:
    """Send usage records to the metering service from a gateway.

    `send(record)` returns at once; a background thread sends records in batches of up to
    `batch_size` (or whatever is waiting after `flush_interval` seconds) to `POST /v1/usage`.

    Without `spool_dir`, records wait in a bounded in-memory queue of `max_pending` records; when it
    is full (the service has been unreachable for a while), `send` raises `QueueFull` at once rather
    than block the gateway's request path or drop the record silently: the caller decides (log the
    record, count it). Records still in memory when the process ends are lost: use a spool.

    With `spool_dir`, `send` returns only once the record is on local disk (appended and fsynced;
    concurrent senders share fsyncs), and the thread reads records back from disk in chunks, so
    memory stays bounded however long the service is away. A client started on a spool that holds
    records (after a crash, or from another worker process that stopped) sends them.

    Delivery: connection errors, timeouts and 5xx answers are retried with exponential backoff and
    jitter; 429 and 503 wait for `Retry-After` when given; a batch refused as too large (413) is
    sent in halves. Exactly once at the service: a record re-sent after a crash or a lost answer
    carries the same `request_id` and is counted as a duplicate, not stored twice.

    Records the service rejects (422, per record) are never retried: they are set aside with the
    service's error text, in `spool_dir/rejected.ndjson`, or in memory (`rejected()`), and logged.
    A 401/403 (or 404/405: a wrong URL) stops sending: `error` says why, records are kept.
    """

    def __init__(self, url: str, token: str, *, spool_dir: str | Path | None = None, batch_size: int = 500,
                 flush_interval: float = 1.0, max_pending: int = 100_000, max_rejected: int = 10_000,
                 timeout: float = 10.0, backoff_base: float = 0.25, backoff_cap: float = 30.0,
                 max_retry_after: float = 600.0) -> None:
        if not 1 <= batch_size <= MAX_RECORDS:
            raise ValueError(f"batch_size must be 1 to {MAX_RECORDS} (the service's limit per request), got {batch_size}")
        if not flush_interval > 0 or not math.isfinite(flush_interval):
            raise ValueError(f"flush_interval must be a positive number of seconds, got {flush_interval!r}")
        if max_pending < batch_size:
            raise ValueError(f"max_pending ({max_pending}) must be at least batch_size ({batch_size})")
        self._api = Api(url, token, timeout=timeout)
        self._buffer: Spool | MemoryBuffer = (
            Spool(spool_dir) if spool_dir is not None else MemoryBuffer(max_pending=max_pending, max_rejected=max_rejected)
        )
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._max_retry_after = max_retry_after
        self._rng = random.Random()  # noqa: S311 - jitter, not secrecy
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._flush_wanted = 0
        self._due: float | None = None
        self._error: ClientError | None = None
        self._closed = False
        self._stats = {"sent": 0, "posts": 0, "accepted": 0, "duplicates": 0, "rejected": 0, "retries": 0}
        self._thread = threading.Thread(target=self._run, name="metering-usage-client", daemon=True)
        self._thread.start()
        _open_clients.add(self)

    # --- the caller's side ------------------------------------------------------------------------

    def send(self, record: Mapping[str, Any]) -> None:
        """Queue one usage record (a mapping in the canonical or native form of CONTRACT.md).

        Raises TypeError when the record cannot be serialized to JSON (a Decimal, a set, a non-string
        key...), ValueError when the client is closed or the record is absurdly large, QueueFull when
        the in-memory queue is full, OSError when the spool cannot be written (a full disk). The
        service checks the record's content; what it rejects is set aside, not raised here."""
        if not isinstance(record, Mapping):
            raise TypeError(f"a usage record is a mapping (dict), got {type(record).__name__}")
        line = orjson.dumps(record)
        if len(line) > MAX_RECORD_BYTES:
            raise ValueError(f"the record is {len(line)} bytes serialized; at most {MAX_RECORD_BYTES}")
        if self._closed:
            raise ValueError("the client is closed")
        self._buffer.append(line + b"\n" if self._buffer.durable else line)
        with self._cond:
            self._stats["sent"] += 1
            self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Send what is waiting now, without waiting for a full batch. True once every record sent
        before this call is acknowledged by the service or set aside as rejected; False when
        `timeout` seconds pass first, or the client has stopped sending (`error`)."""
        mark = self._buffer.end()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._flush_wanted += 1
            self._cond.notify_all()
            try:
                while not self._buffer.reached(mark):
                    if self._error is not None or not self._thread.is_alive():
                        return False
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._cond.wait(0.5 if remaining is None else min(remaining, 0.5))
                return True
            finally:
                self._flush_wanted -= 1

    def close(self, timeout: float | None = 10.0) -> bool:
        """Flush (waiting at most `timeout` seconds), stop the thread, release the spool. Idempotent.
        True when nothing was left undelivered. What is left stays in the spool for the next client;
        without a spool it is lost, and the log says how many records."""
        if self._closed:
            return self._buffer.pending() == 0
        self._closed = True
        _open_clients.discard(self)
        done = self.flush(timeout) if self._error is None else False
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=self._api.http.timeout.read or 10.0)
        left = self._buffer.pending()
        if left:
            where = (f"kept in the spool {self._buffer.directory} for the next client" if self._buffer.durable
                     else "in memory: lost when this process ends (read them with unsent())")
            log.error("metering client closed with %d records undelivered, %s", left, where)
        if not self._thread.is_alive():
            self._buffer.close()
            self._api.close()
        return done and left == 0

    def __enter__(self) -> UsageClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def error(self) -> ClientError | None:
        """Why the client stopped sending (401/403: the token; 404/405: the URL), or None."""
        return self._error

    @property
    def url(self) -> str:
        """The service's base URL."""
        return self._api.url

    @property
    def durable(self) -> bool:
        """True with a spool: `send` returned means the record is on disk."""
        return self._buffer.durable

    @property
    def spool_path(self) -> Path | None:
        return self._buffer.directory if isinstance(self._buffer, Spool) else None

    def pending(self) -> int:
        """Records not yet acknowledged by the service (in the spool: durable ones)."""
        return self._buffer.pending()

    def rejected(self) -> list[Rejected]:
        """Records the service rejected, each with its error (with a spool: every line of
        rejected.ndjson, earlier runs' included; in memory: the last `max_rejected`)."""
        return self._buffer.rejected()

    def unsent(self) -> list[dict]:
        """Without a spool: the records not yet acknowledged, e.g. after a 401 stopped the client."""
        if isinstance(self._buffer, MemoryBuffer):
            return self._buffer.unsent()
        raise TypeError("with a spool, unsent records are in the spool directory; a new client sends them")

    # --- budget reservations (synchronous: on the gateway's request path) ----------------------------

    def reserve(self, request_id: str, *, api_key_id: str, model: str, max_output_tokens: int,
                max_input_tokens: int = 0, ttl_seconds: int = 600, tags: Mapping[str, str] | None = None) -> Reservation:
        """Ask before a call whether it may be made: the service holds the most the call can cost
        against the enforced budgets covering the key (`allowed`), or denies and holds nothing
        (`reason` names the budget). Send the call's usage record with the same `request_id` to settle
        the hold, or `release(request_id)` if the call failed. Raises ClientError when the service
        cannot answer (unreachable, refused token): the gateway chooses to fail open or closed."""
        body: dict[str, Any] = {"request_id": request_id, "api_key_id": api_key_id, "model": model,
                                "max_input_tokens": max_input_tokens, "max_output_tokens": max_output_tokens,
                                "ttl_seconds": ttl_seconds}
        if tags:
            body["tags"] = dict(tags)
        answer = self._call(lambda: self._api.reserve(body))
        return Reservation(request_id=request_id, allowed=answer["decision"] == "allow", held=answer.get("held", "0"),
                           reason=answer.get("reason"), denied_by=tuple(answer.get("denied_by") or ()),
                           budgets=tuple(answer.get("budgets") or ()))

    def release(self, request_id: str) -> str:
        """Give a hold back (the call failed); idempotent. Returns the reservation's status."""
        return str(self._call(lambda: self._api.release(request_id))["status"])

    def _call(self, request: Any) -> dict[str, Any]:
        try:
            response = request()
        except httpx.HTTPError as exc:
            raise ClientError(f"the metering service did not answer: {type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            try:
                message = orjson.loads(response.content)["error"]["message"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                message = response.text[:200]
            raise ClientError(f"{response.status_code}: {message}")
        return orjson.loads(response.content)

    def stats(self) -> dict[str, int]:
        """Counts since start: sent (by send), posts, accepted, duplicates, rejected, retries, fsyncs."""
        with self._cond:
            out = dict(self._stats)
        out["fsyncs"] = self._buffer.fsyncs if isinstance(self._buffer, Spool) else 0
        out["pending"] = self._buffer.pending()
        return out

    # --- the background thread --------------------------------------------------------------------

    def _wait_for_batch(self) -> bool:
        """Wait until a batch is due: batch_size records, flush_interval elapsed, a flush, or stop."""
        with self._cond:
            while True:
                if self._stop.is_set():
                    return False
                pending = self._buffer.pending()
                if self._error is not None or pending <= 0:
                    self._due = None
                    self._cond.wait()
                    continue
                now = time.monotonic()
                if self._due is None:
                    self._due = now + self.flush_interval
                if pending >= self.batch_size or self._flush_wanted or now >= self._due:
                    self._due = None
                    return True
                self._cond.wait(self._due - now)

    def _run(self) -> None:
        failures = 0
        while self._wait_for_batch():
            try:
                chunk = self._buffer.read(self.batch_size, MAX_BATCH_BYTES)
                if chunk is None:
                    self._stop.wait(0.01)  # counted, not yet readable (a concurrent fsync is finishing)
                    continue
                rejected = self._deliver(chunk.lines) if chunk.lines else []
                if rejected:
                    self._set_aside(rejected)
                self._buffer.ack(chunk)
                failures = 0
            except (_Abandon, _Fatal):
                continue
            except Exception:  # a bug or a disk error must not end delivery silently
                failures += 1
                log.exception("metering client: delivery failed unexpectedly; retrying")
                self._stop.wait(backoff(failures, base=self._backoff_base, cap=self._backoff_cap, rng=self._rng))
            finally:
                with self._cond:
                    self._cond.notify_all()

    def _deliver(self, lines: list[bytes]) -> list[tuple[bytes, str, int]]:
        """POST `lines` until the service settles each; return the rejected ones with their errors."""
        attempt = 0
        while True:
            try:
                outcome = classify(self._api.post_usage(lines))
            except httpx.TransportError as exc:
                outcome = Outcome("retry", None, f"{type(exc).__name__}: {exc}")
            with self._cond:
                self._stats["posts"] += 1
            if outcome.kind == "done":
                self._count(outcome)
                return [(lines[i], error, outcome.status or 422) for i, error in sorted(outcome.errors.items())
                        if 0 <= i < len(lines)]
            if outcome.kind == "split":
                if len(lines) == 1:
                    return [(lines[0], outcome.message, outcome.status or 400)]
                log.info("metering client: %s; sending the batch of %d in halves", outcome.message, len(lines))
                middle = len(lines) // 2
                return self._deliver(lines[:middle]) + self._deliver(lines[middle:])
            if outcome.kind == "fatal":
                self._fail(outcome.message)
                raise _Fatal
            delay = outcome.delay
            if delay is None:
                delay = backoff(attempt, base=self._backoff_base, cap=self._backoff_cap, rng=self._rng)
            delay = min(delay, self._max_retry_after)
            (log.warning if attempt == 0 else log.info)(
                "metering client: %d records not delivered (%s); retrying in %.2f s (attempt %d)",
                len(lines), outcome.message, delay, attempt + 1)
            attempt += 1
            with self._cond:
                self._stats["retries"] += 1
            if self._stop.wait(delay):
                raise _Abandon

    def _count(self, outcome: Outcome) -> None:
        with self._cond:
            self._stats["accepted"] += outcome.accepted
            self._stats["duplicates"] += outcome.duplicates
            self._stats["rejected"] += len(outcome.errors)

    def _set_aside(self, rejected: list[tuple[bytes, str, int]]) -> None:
        for line, error, status in rejected:
            log.warning("metering client: the service rejected a record (HTTP %d: %s); set aside: %s",
                        status, error, line.decode("utf-8", "replace")[:500])
        self._buffer.set_aside(rejected)

    def _fail(self, message: str) -> None:
        with self._cond:
            self._error = ClientError(f"the metering service refused the client: {message}; sending stopped, "
                                      f"{self._buffer.pending()} records kept")
            self._cond.notify_all()
        log.error("%s", self._error)


_open_clients: weakref.WeakSet[UsageClient] = weakref.WeakSet()


@atexit.register
def _close_open_clients() -> None:
    """At interpreter exit, give each open client a few seconds to deliver what it holds."""
    for client in list(_open_clients):
        with contextlib.suppress(Exception):  # exit must go on
            client.close(timeout=5.0)
