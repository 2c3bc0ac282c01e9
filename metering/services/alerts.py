"""Alerts: which are due (thresholds, forecasts, anomalies), the outbox they are written to, who may
read them, and the thread that evaluates budgets.

Evaluation decides on one read snapshot which alerts are due (`decide`), then writes only those on
the writer thread. Each alert's dedupe key is UNIQUE, so an alert is written once per budget, period
and threshold (per key and day for anomalies) however often evaluation runs, and a crash either keeps
the alert or loses only the decision, which the next evaluation makes again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb

from metering import budgets as rules
from metering.access import KEY, UNASSIGNED, Principal
from metering.budgets import Budget
from metering.pricing import usd_string
from metering.services import reservations
from metering.services.budgets import statuses
from metering.services.context import Context
from metering.services.statuscache import StatusCache
from metering.store import budgets as table
from metering.store.budgets import NewAlert, RollupState

log = logging.getLogger("metering.alerts")

THRESHOLD_CROSSED = "budget.threshold_crossed"
FORECAST_EXCEEDED = "budget.forecast_exceeded"
SPEND_ANOMALY = "spend.anomaly"
_SPECIFICITY = {"api_key": 0, "account": 1, "all": 2, "tag": 3}


def _payload(kind: str, now: datetime, data: dict[str, Any]) -> str:
    return json.dumps({"type": kind, "timestamp": now.isoformat().replace("+00:00", "Z"), "data": data},
                      separators=(",", ":"))


def _alert(dedupe_key: str, kind: str, budget: Budget | None, *, api_key_id: str | None = None,
           period_start: datetime | None = None, payload: str) -> NewAlert:
    url = budget.webhook_url if budget else None
    state = "no_endpoint" if url is None else "disabled" if budget and budget.webhook_disabled_at else "pending"
    return NewAlert(dedupe_key, kind, budget.id if budget else None, api_key_id, period_start, payload, url, state)


def decide(cur: duckdb.DuckDBPyConnection, *, now: datetime, keys: dict[str, str], anomaly_min_pico: int,
           cache: StatusCache | None = None) -> list[NewAlert]:
    """The alerts due now and not yet written, decided on one read snapshot (spend only grows, so a
    crossing seen here is still a crossing when it is written). `keys`: api_key_id -> account_id."""
    decisions: list[NewAlert] = []
    all_budgets = table.active(cur)
    state = RollupState.read(cur) if all_budgets and cache is not None else None
    found = statuses(cur, [(budget, budget.forecast, 0) for budget in all_budgets], now=now, cache=cache, state=state)
    for budget, st in zip(all_budgets, found, strict=True):
        period_key = st.period_start.isoformat()
        fired = table.fired_keys(cur, budget_id=budget.id, period_start=st.period_start)
        fired_thresholds = {k.rsplit(":", 1)[1] for k in fired if k.startswith("threshold:")}
        base = st.as_json()
        for threshold in rules.due_thresholds(amount=budget.amount_pico, spent=st.spent,
                                              thresholds=budget.thresholds, fired=fired_thresholds):
            text = rules.format_threshold(threshold)
            decisions.append(_alert(f"threshold:{budget.id}:{period_key}:{text}", THRESHOLD_CROSSED, budget,
                                    period_start=st.period_start,
                                    payload=_payload(THRESHOLD_CROSSED, now, {**base, "threshold": text})))
        key = f"forecast:{budget.id}:{period_key}"
        if budget.forecast and key not in fired and st.spent < budget.amount_pico <= st.projected:
            decisions.append(_alert(key, FORECAST_EXCEEDED, budget, period_start=st.period_start,
                                    payload=_payload(FORECAST_EXCEEDED, now, base)))
    decisions += _anomalies(cur, now=now, keys=keys, budgets_=all_budgets, min_pico=anomaly_min_pico)
    return decisions


def _anomalies(cur: duckdb.DuckDBPyConnection, *, now: datetime, keys: dict[str, str], budgets_: list[Budget],
               min_pico: int) -> list[NewAlert]:
    today = now.astimezone(UTC).date()
    first = today - timedelta(days=rules.ANOMALY_DAYS)
    rows = table.daily_spend_by_key(cur, start=datetime(first.year, first.month, first.day, tzinfo=UTC),
                                    end=datetime(today.year, today.month, today.day, tzinfo=UTC) + timedelta(days=1))
    fired = table.fired_like(cur, kind=SPEND_ANOMALY, pattern=f"anomaly:%:{today.isoformat()}")
    per_key: dict[str, dict[Any, int]] = {}
    for key_id, day, pico in rows:
        per_key.setdefault(key_id, {})[day] = pico
    decisions = []
    for key_id, days in per_key.items():
        dedupe = f"anomaly:{key_id}:{today.isoformat()}"
        spent_today = days.get(today, 0)
        previous = [days.get(first + timedelta(days=i), 0) for i in range(rules.ANOMALY_DAYS)]
        if dedupe in fired or not rules.is_anomaly(today=spent_today, previous_days=previous, min_pico=min_pico):
            continue
        account = keys.get(key_id, UNASSIGNED)
        # Delivered to the webhook of the most specific budget covering the key (its own, its account's,
        # everything's); listed, for keys, only to the key it is about.
        covering = sorted((b for b in budgets_ if b.webhook_url and b.scope.covers(api_key_id=key_id, account_id=account)),
                          key=lambda b: _SPECIFICITY[b.scope.kind])
        data = {"api_key_id": key_id, "account_id": account, "day": today.isoformat(),
                "spent": usd_string(spent_today),
                "baseline_median": usd_string(int(sorted(previous)[len(previous) // 2])),
                "previous_max": usd_string(max(previous)),
                "rule": f"today >= min and > {rules.ANOMALY_FACTOR} x the median of the last "
                        f"{rules.ANOMALY_DAYS} days and > their maximum"}
        decisions.append(_alert(dedupe, SPEND_ANOMALY, covering[0] if covering else None, api_key_id=key_id,
                                payload=_payload(SPEND_ANOMALY, now, data)))
    return decisions


def evaluate_now(ctx: Context) -> list[str]:
    """Decide on a read snapshot (off the writer thread, so ingest goes on), then write only the
    alerts that are due, on the writer. Returns the dedupe keys written."""
    if ctx.metrics is None:
        return _evaluate(ctx)
    started = time.perf_counter()
    try:
        written = _evaluate(ctx)
    except Exception:
        ctx.metrics.budget_evaluation(seconds=time.perf_counter() - started, alerts=0, failed=True)
        raise
    ctx.metrics.budget_evaluation(seconds=time.perf_counter() - started, alerts=len(written))
    return written


def _evaluate(ctx: Context) -> list[str]:
    store = ctx.store
    keys = {k.api_key_id: k.account_id for k in store.list_keys()}
    now = ctx.now()
    with store.reading() as cur:
        decisions = decide(cur, now=now, keys=keys, anomaly_min_pico=ctx.settings.anomaly_min_pico,
                           cache=ctx.status_cache)
    if not decisions:
        return []
    return store.writer.call(lambda con: table.insert_alerts(con, decisions, now=now))


def list_alerts(ctx: Context, *, principal: Principal) -> list[dict[str, Any]]:
    """Every alert for admin. A key: the alerts of budgets scoped to itself and the anomalies about
    itself, without webhook URLs or delivery error texts (which name the endpoint)."""
    with ctx.store.reading() as cur:
        items = table.list_alerts(cur)
        if principal.role != KEY:
            return items
        assert principal.key is not None
        me = principal.key.api_key_id
        own = {b.id for b in table.all_budgets(cur) if b.scope.is_key(me)}
    visible = []
    for item in items:
        if item["budget_id"] in own or (item["type"] == SPEND_ANOMALY and item["api_key_id"] == me):
            item.pop("webhook_url", None)
            for attempt in item["delivery_attempts"]:
                attempt.pop("error", None)
            visible.append(item)
    return visible


class Evaluator:
    """Evaluates budgets: debounced after ingest commits, on a schedule, and on demand."""

    def __init__(self, ctx: Context, *, on_written: Callable[[], None] | None = None, debounce: float = 0.25) -> None:
        self._ctx = ctx
        self._on_written = on_written
        self._interval = ctx.settings.evaluate_interval
        self._debounce = debounce
        self._trigger = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Evaluator:
        if self._ctx.settings.evaluate_on_ingest:
            self._ctx.store.writer.on_ingest(self.trigger)
        self._thread = threading.Thread(target=self._run, name="metering-budgets", daemon=True)
        self._thread.start()
        return self

    def trigger(self) -> None:
        self._trigger.set()

    def stop(self) -> None:
        self._stop.set()
        self._trigger.set()
        if self._thread:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            triggered = self._trigger.wait(self._interval)
            if self._stop.is_set():
                return
            if triggered and self._stop.wait(self._debounce):  # a burst of commits: one evaluation for all
                return
            self._trigger.clear()
            try:
                self.evaluate()
                reservations.expire(self._ctx)
            except Exception:
                log.exception("budget evaluation failed")

    def evaluate(self) -> list[str]:
        written = evaluate_now(self._ctx)
        if written and self._on_written is not None:
            self._on_written()
        return written
