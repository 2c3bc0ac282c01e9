"""Signed webhook delivery from the alert outbox.

Signatures follow the Standard Webhooks specification: headers `webhook-id` (the alert's id,
the same on every retry), `webhook-timestamp` (Unix seconds) and `webhook-signature`
(`v1,` + base64 of HMAC-SHA256 over `{id}.{timestamp}.{body}`, keyed with the base64 part of
a `whsec_` secret). Delivery is at least once: an alert stays pending until a 2xx answer, is
retried on the schedule with +-20% jitter, fails after the last retry, and a 410 Gone
disables its endpoint.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import socket
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from metering.services.context import Context
from metering.signing import sign
from metering.store import budgets as table
from metering.webhook_urls import forbidden_address

log = logging.getLogger("metering.webhooks")

# Standard Webhooks' suggested schedule after the first attempt: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
DEFAULT_RETRY_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
JITTER = 0.2


def parse_schedule(text: str | None) -> tuple[float, ...]:
    if not text:
        return DEFAULT_RETRY_SCHEDULE
    try:
        values = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"METERING_WEBHOOK_RETRY_SCHEDULE: not a comma list of seconds: {text!r}") from None
    if any(v < 0 for v in values):
        raise ValueError("METERING_WEBHOOK_RETRY_SCHEDULE: delays must not be negative")
    return values


Resolver = Callable[[str, int], list[str]]


def _resolve(host: str, port: int) -> list[str]:
    return [info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


class WebhookRefused(Exception):
    pass


def pin_address(url: str, *, allow_link_local: bool, resolve: Resolver = _resolve) -> tuple[list[str], dict[str, str],
                                                                                           dict[str, Any]]:
    """Resolve the URL's host once and refuse it if any address is link-local or a metadata
    address (a name that passed the check at creation may point there now: DNS rebinding).
    Returns (the URL with each address in turn, the Host header, the TLS server name), so the
    connection goes to an address that was checked and no other."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = list(dict.fromkeys(ipaddress.ip_address(a.split("%")[0]) for a in resolve(host, port)))
    if not addresses:
        raise WebhookRefused(f"{host} does not resolve")
    bad = next((a for a in addresses if forbidden_address(a)), None)
    if bad is not None and not allow_link_local:
        raise WebhookRefused(f"refused: {host} resolves to {bad}, a link-local or metadata address "
                             "(METERING_WEBHOOK_ALLOW_LINK_LOCAL=1 allows it)")
    userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    urls = []
    for address in addresses:
        literal = f"[{address}]" if address.version == 6 else str(address)
        netloc = userinfo + (f"{literal}:{parts.port}" if parts.port else literal)
        urls.append(urlunsplit(parts._replace(netloc=netloc)))
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    return urls, {"host": parts.netloc.rsplit("@", 1)[-1]}, extensions


class Sender:
    """Delivers due alerts; one thread. `wake()` makes it look at the outbox at once."""

    def __init__(self, ctx: Context, *, timeout: float = 10.0, poll: float = 0.5, rng: random.Random | None = None,
                 resolve: Resolver = _resolve) -> None:
        self._store = ctx.store
        self._metrics = ctx.metrics
        self._allow_link_local = ctx.settings.webhook_allow_link_local
        self._resolve = resolve
        self._schedule = parse_schedule(ctx.settings.webhook_retry_schedule)
        self._poll = poll
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not security)
        self._client = httpx.Client(timeout=timeout, follow_redirects=False)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Sender:
        self._thread = threading.Thread(target=self._run, name="metering-webhooks", daemon=True)
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=30)
        self._client.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.deliver_due()
            except Exception:
                log.exception("webhook delivery round failed")
            self._wake.wait(self._poll)
            self._wake.clear()

    def deliver_due(self) -> int:
        """One round: send every alert that is due now. Returns how many were attempted."""
        with self._store.reading() as cur:
            items = table.due(cur, now=self._store.clock())
        for item in items:
            if self._stop.is_set():
                break
            self._deliver(item)
        return len(items)

    def _deliver(self, item: table.Due) -> None:
        body = item.payload.encode()
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": item.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(item.secret, item.id, timestamp, body),
            "user-agent": "metering-webhooks/1",
        }
        status_code: int | None = None
        error: str | None = None
        outcome = "failed"
        started = time.perf_counter()
        try:
            urls, host, extensions = pin_address(item.url, allow_link_local=self._allow_link_local,
                                                 resolve=self._resolve)
            for i, url in enumerate(urls):  # each address in turn, as a connect would
                try:
                    response = self._client.post(url, content=body, headers={**headers, **host}, extensions=extensions)
                    break
                except httpx.ConnectError:
                    if i == len(urls) - 1:
                        raise
            status_code = response.status_code
            if not 200 <= status_code < 300:
                error = f"HTTP {status_code}"
            outcome = "delivered" if error is None else "gone" if status_code == 410 else "failed"
        except WebhookRefused as exc:
            error = str(exc)[:500]
            outcome = "refused"
        except (httpx.HTTPError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        duration_ms = int((time.perf_counter() - started) * 1000)
        attempt = item.attempts + 1
        next_delay = None
        if attempt <= len(self._schedule):
            base = self._schedule[attempt - 1]
            next_delay = base * (1 + self._rng.uniform(-JITTER, JITTER))
        self._store.writer.call(lambda con: table.record_attempt(
            con, item, now=self._store.clock(), status_code=status_code, error=error, duration_ms=duration_ms,
            next_delay=next_delay))
        if status_code == 410:
            self._store.touch("budgets")  # its endpoint is disabled: readers' copies of the budgets are stale
        if self._metrics is not None:
            self._metrics.webhook_delivery(outcome)
