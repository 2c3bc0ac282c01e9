"""The service's own figures for Prometheus (GET /metrics): one registry per app, never the
process-wide default, so two apps in one process (tests) count apart.

Counters are bumped where things happen (ingest outcomes, HTTP requests, webhook attempts, budget
evaluations); the writer's figures (queue depth, rollup lag, group commit sizes) are read from
`Writer.state()` when Prometheus scrapes, so the write path pays nothing for them.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

if TYPE_CHECKING:
    from metering.store.stats import Sizes
    from metering.store.writer import Writer

ACCEPTED, DUPLICATE, REJECTED = "accepted", "duplicate", "rejected"
# Seconds; single POSTs take a few milliseconds, reports up to the query time limit.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
UNMATCHED = "unmatched"  # a path no route serves (404): one series, whatever the path was

# Webhook attempts: delivered (2xx), gone (410: the endpoint is disabled), failed (any other answer or
# a transport error: retried on the schedule), refused (the URL resolves to a forbidden address).
WEBHOOK_OUTCOMES = ("delivered", "failed", "gone", "refused")


class Metrics:
    """The registry of one app and its instruments. Thread-safe (prometheus_client's own locks)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self._ingest = Counter("metering_ingest_records", "Usage records received through POST /v1/usage and "
                               "POST /v1/traces, by outcome", ["outcome"], registry=r)
        self._ingest_by_outcome = {o: self._ingest.labels(o) for o in (ACCEPTED, DUPLICATE, REJECTED)}
        self._requests = _RequestTimings()
        r.register(self._requests)
        self._webhooks = Counter("metering_webhook_deliveries", "Webhook delivery attempts by outcome",
                                 ["outcome"], registry=r)
        for outcome in WEBHOOK_OUTCOMES:
            self._webhooks.labels(outcome)
        self._evaluations = Counter("metering_budget_evaluations", "Budget evaluations by outcome (ok, failed)",
                                    ["outcome"], registry=r)
        for outcome in ("ok", "failed"):
            self._evaluations.labels(outcome)
        self._evaluation_seconds = Histogram("metering_budget_evaluation_duration_seconds",
                                             "Time one evaluation of every budget took", buckets=LATENCY_BUCKETS,
                                             registry=r)
        self._alerts = Counter("metering_alerts_written", "Alerts written to the outbox by budget evaluation",
                               registry=r)
        self._writer = _WriterCollector()
        r.register(self._writer)

    # --- where things happen ---------------------------------------------------------------------
    def ingested(self, *, accepted: int, duplicates: int, rejected: int) -> None:
        for outcome, n in ((ACCEPTED, accepted), (DUPLICATE, duplicates), (REJECTED, rejected)):
            if n:
                self._ingest_by_outcome[outcome].inc(n)

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        """One HTTP request; `route` is the route's template (bounded: the app's routes), never the path.
        Called on the event loop's thread only."""
        self._requests.observe(method if method in METHODS else "other", route, status, seconds)

    def webhook_delivery(self, outcome: str) -> None:
        self._webhooks.labels(outcome).inc()

    def budget_evaluation(self, *, seconds: float, alerts: int, failed: bool = False) -> None:
        self._evaluations.labels("failed" if failed else "ok").inc()
        self._evaluation_seconds.observe(seconds)
        if alerts:
            self._alerts.inc(alerts)

    def watch(self, writer: Writer) -> None:
        """Read the writer's figures at each scrape (the app's store, once it is open)."""
        self._writer.writer = writer

    # --- the scrape --------------------------------------------------------------------------------
    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The registry in the format the scraper asked for (Prometheus text, or OpenMetrics)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


class _RequestTimings(Collector):
    """Latency histograms and response counts per (method, route). Every request is counted on the
    event loop's thread (the middleware's), the only writer, so plain Python counters do without
    locks: about a microsecond a request, where prometheus_client's locked Histogram and Counter cost
    several. A scrape (any thread) copies each series first, in one step under the interpreter lock."""

    def __init__(self) -> None:
        self._latency: dict[tuple[str, str], list] = {}  # -> [count per bucket (the last above every bound), sum]
        self._responses: dict[tuple[str, str, int], int] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        series = self._latency.get((method, route))
        if series is None:
            series = self._latency[(method, route)] = [0] * (len(LATENCY_BUCKETS) + 1) + [0.0]
        series[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        series[-1] += seconds
        key = (method, route, status)
        self._responses[key] = self._responses.get(key, 0) + 1

    def collect(self) -> Iterator[Any]:
        latency = HistogramMetricFamily("metering_http_request_duration_seconds", "HTTP request latency per route "
                                        "template (until the response is sent)", labels=["method", "route"])
        for (method, route), series in list(self._latency.items()):
            *counts, total = list(series)
            latency.add_metric([method, route], _cumulative(LATENCY_BUCKETS, counts), sum_value=total)
        yield latency
        responses = CounterMetricFamily("metering_http_responses", "HTTP responses per route template and status",
                                        labels=["method", "route", "status"])
        for (method, route, status), n in list(self._responses.items()):
            responses.add_metric([method, route, str(status)], n)
        yield responses


def _cumulative(bounds: tuple, counts: list[int] | tuple[int, ...]) -> list[tuple[str, float]]:
    """Per-bucket counts -> Prometheus' cumulative buckets, +Inf last."""
    buckets, running = [], 0
    for bound, count in zip((*(floatToGoString(b) for b in bounds), "+Inf"), counts, strict=True):
        running += count
        buckets.append((bound, running))
    return buckets


class _WriterCollector(Collector):
    """Gauges and histograms read from `Writer.state()` at scrape time."""

    def __init__(self) -> None:
        self.writer: Writer | None = None

    def collect(self) -> Iterator[Any]:
        if self.writer is None:
            return
        state = self.writer.state()
        yield GaugeMetricFamily("metering_writer_queue_depth", "Ingest batches and writes waiting for the writer "
                                "thread", value=state.queue_depth)
        yield GaugeMetricFamily("metering_rollup_lag_records", "Records committed to the ledger and not yet "
                                "rolled up (reads add them on the fly)", value=state.unflushed_records)
        yield GaugeMetricFamily("metering_rollup_lag_seconds", "Seconds since the last rollup flush while records "
                                "wait for the next one (0 when none wait)", value=state.lag_seconds)
        yield _histogram("metering_writer_group_commit_records", "Records per group commit", state.group_records)
        yield _histogram("metering_writer_group_commit_requests", "Ingest requests per group commit",
                         state.group_requests)


def _histogram(name: str, documentation: str, sizes: Sizes) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, documentation, buckets=_cumulative(sizes.bounds, sizes.counts),
                                 sum_value=sizes.total)
