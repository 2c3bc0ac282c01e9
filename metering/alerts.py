"""Budgets in the store, their evaluation, and the alert outbox.

Evaluation decides on one read snapshot which alerts are due (`decide`), then writes only those
into the outbox on the writer thread (`write_alerts`). Each alert's `dedupe_key` is UNIQUE, so an
alert is written once per budget, period and threshold (or per key and day for anomalies) however
often evaluation runs, and a crash either keeps the alert or loses only the decision, which the
next evaluation makes again.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

import duckdb

from metering import budgets
from metering.errors import BadRequest, NotFound
from metering.pricing import from_usd, to_usd
from metering.ratecard import format_decimal
from metering.signing import check_secret, new_secret
from metering.store.db import naive_utc
from metering.store.queries import UNASSIGNED, live_rollup
from metering.timewindows import zone

THRESHOLD_CROSSED = "budget.threshold_crossed"
FORECAST_EXCEEDED = "budget.forecast_exceeded"
SPEND_ANOMALY = "spend.anomaly"
MAX_AMOUNT = Decimal(1_000_000_000)


@dataclass(frozen=True, slots=True)
class Budget:
    id: str
    scope: budgets.Scope
    period: str
    tz: str
    amount_pico: int
    basis: str
    thresholds: tuple[Decimal, ...]
    forecast: bool
    webhook_url: str | None
    webhook_secret: str | None
    webhook_disabled_at: datetime | None
    created_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "scope": self.scope.as_json(), "period": self.period, "tz": self.tz,
            "amount": format_decimal(to_usd(self.amount_pico)), "basis": self.basis,
            "thresholds": [budgets.format_threshold(t) for t in self.thresholds], "forecast": self.forecast,
            "webhook_url": self.webhook_url,
            "webhook_disabled": self.webhook_disabled_at is not None,
            "created_at": self.created_at.isoformat().replace("+00:00", "Z"),
        }


_COLUMNS = ("id, scope_kind, scope_value, scope_tag, period, tz, amount_pico, basis, thresholds, forecast, "
            "webhook_url, webhook_secret, webhook_disabled_at, created_at")


def _budget(row: tuple) -> Budget:
    (bid, kind, value, tag, period, tz, amount, basis, thresholds, forecast, url, secret, disabled,
     created) = row
    return Budget(
        id=bid, scope=budgets.Scope(kind, value, tag), period=period, tz=tz, amount_pico=int(amount), basis=basis,
        thresholds=tuple(Decimal(t) for t in json.loads(thresholds)), forecast=bool(forecast), webhook_url=url,
        webhook_secret=secret, webhook_disabled_at=disabled.replace(tzinfo=UTC) if disabled else None,
        created_at=created.replace(tzinfo=UTC),
    )


# --- validation and storage ------------------------------------------------------------------------


METADATA_HOSTS = {"metadata", "metadata.google.internal", "metadata.goog", "instance-data",
                  "instance-data.ec2.internal"}


def check_webhook_url(url: Any, *, allow_link_local: bool = False) -> None:
    """An http(s) URL; link-local and cloud metadata addresses are refused (they would let a budget
    owner make the service fetch credentials) unless the deployment allows them."""
    if not isinstance(url, str) or len(url) > 2000:
        raise BadRequest("webhook_url: must be an http:// or https:// URL of at most 2000 characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest("webhook_url: must be an http:// or https:// URL with a host")
    if allow_link_local:
        return
    host = parts.hostname.rstrip(".").lower()
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if host in METADATA_HOSTS or (address is not None and forbidden_address(address)):
        raise BadRequest(f"webhook_url: {host} is a link-local or metadata address; refused "
                         "(set METERING_WEBHOOK_ALLOW_LINK_LOCAL=1 to allow it)")


def forbidden_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Link-local (169.254/16, fe80::/10: where cloud metadata services answer) or AWS's IPv6
    metadata address; an IPv4 address mapped into IPv6 is judged as itself."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_link_local or address == ipaddress.ip_address("fd00:ec2::254")


def validate(body: dict[str, Any], *, allow_link_local: bool = False) -> dict[str, Any]:
    """A BudgetCreate body -> checked values; errors name the field."""
    allowed = {"scope", "period", "tz", "amount", "basis", "thresholds", "forecast", "webhook_url", "webhook_secret"}
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadRequest(f"{unknown[0]}: unknown field")
    scope = budgets.Scope.parse(body.get("scope"))
    period = body.get("period", "month")
    if period not in budgets.PERIODS:
        raise BadRequest(f"period: must be one of {', '.join(budgets.PERIODS)}, got {period!r}")
    tz = body.get("tz", "UTC")
    if not isinstance(tz, str):
        raise BadRequest("tz: must be an IANA time zone name")
    zone(tz)
    amount_text = body.get("amount")
    try:
        amount = Decimal(str(amount_text)) if isinstance(amount_text, (str, int)) and not isinstance(
            amount_text, bool) else None
    except InvalidOperation:
        amount = None
    if amount is None or not amount.is_finite() or amount <= 0 or amount > MAX_AMOUNT:
        raise BadRequest(f'amount: must be a positive decimal string such as "100.00", got {amount_text!r}')
    try:
        amount_pico = from_usd(amount)
    except ValueError:
        raise BadRequest("amount: at most 12 decimal places") from None
    basis = body.get("basis", "cost")
    if basis not in budgets.BASES:
        raise BadRequest(f"basis: must be one of {', '.join(budgets.BASES)}, got {basis!r}")
    raw_thresholds = body.get("thresholds", [str(t) for t in budgets.DEFAULT_THRESHOLDS])
    if not isinstance(raw_thresholds, list) or not 1 <= len(raw_thresholds) <= 20:
        raise BadRequest("thresholds: must be a list of 1 to 20 fractions, such as [0.5, 0.8, 1.0]")
    thresholds = []
    for i, t in enumerate(raw_thresholds):
        try:
            value = Decimal(str(t)) if not isinstance(t, bool) else None
        except InvalidOperation:
            value = None
        if value is None or not value.is_finite() or not Decimal(0) < value <= Decimal(10):
            raise BadRequest(f"thresholds[{i}]: must be a fraction above 0 and at most 10, got {t!r}")
        thresholds.append(value.normalize())
    if len(set(thresholds)) != len(thresholds):
        raise BadRequest("thresholds: must not repeat a value")
    forecast = body.get("forecast", False)
    if not isinstance(forecast, bool):
        raise BadRequest("forecast: must be true or false")
    url = body.get("webhook_url")
    if url is not None:
        check_webhook_url(url, allow_link_local=allow_link_local)
    secret = body.get("webhook_secret")
    if secret is not None:
        check_secret(secret)
    elif url is not None:
        secret = new_secret()
    return {"scope": scope, "period": period, "tz": tz, "amount_pico": amount_pico, "basis": basis,
            "thresholds": tuple(sorted(thresholds)), "forecast": forecast, "webhook_url": url,
            "webhook_secret": secret}


def create(con: duckdb.DuckDBPyConnection, values: dict[str, Any], *, now: datetime) -> Budget:
    budget = Budget(id="bud_" + secrets.token_hex(8), webhook_disabled_at=None, created_at=now.astimezone(UTC),
                    **values)
    con.execute(
        f"INSERT INTO budgets ({_COLUMNS}, deleted_at) VALUES ({', '.join('?' * 15)})",  # noqa: S608
        [budget.id, budget.scope.kind, budget.scope.value, budget.scope.tag_name, budget.period, budget.tz,
         budget.amount_pico, budget.basis, json.dumps([str(t) for t in budget.thresholds]), budget.forecast,
         budget.webhook_url, budget.webhook_secret, None, naive_utc(now), None],
    )
    return budget


def active(cur: duckdb.DuckDBPyConnection) -> list[Budget]:
    rows = cur.execute(f"SELECT {_COLUMNS} FROM budgets WHERE deleted_at IS NULL ORDER BY created_at, id"  # noqa: S608
                       ).fetchall()
    return [_budget(r) for r in rows]


def get(cur: duckdb.DuckDBPyConnection, budget_id: str) -> Budget:
    rows = cur.execute(f"SELECT {_COLUMNS} FROM budgets WHERE id = ? AND deleted_at IS NULL",  # noqa: S608
                       [budget_id]).fetchall()
    if not rows:
        raise NotFound(f"no budget {budget_id!r}")
    return _budget(rows[0])


def delete(con: duckdb.DuckDBPyConnection, budget_id: str, *, now: datetime) -> None:
    get(con, budget_id)
    con.execute("UPDATE budgets SET deleted_at = ? WHERE id = ?", [naive_utc(now), budget_id])


# --- spend ---------------------------------------------------------------------------------------------


def _spend_source(budget: Budget, live: str) -> tuple[str, str, list[Any]]:
    """(FROM ... WHERE filter, timestamp column, params) for a budget's scope; money column by basis.
    Identifiers come from fixed choices; values are bound."""
    column = "cost_pico" if budget.basis == "cost" else "list_cost_pico"
    if budget.scope.kind == "tag":
        return (f"SELECT occurred_at AS ts, {column} AS pico FROM ledger WHERE tags[?] = ?", "ts",  # noqa: S608
                [budget.scope.tag_name, budget.scope.value])
    if budget.scope.kind == "api_key":
        return (f"SELECT bucket_start AS ts, {column} AS pico FROM {live} WHERE api_key_id = ?", "ts",  # noqa: S608
                [budget.scope.value])
    if budget.scope.kind == "account":
        return (f"SELECT bucket_start AS ts, {column} AS pico FROM {live} r "  # noqa: S608
                f"LEFT JOIN api_keys k USING (api_key_id) WHERE coalesce(k.account_id, '{UNASSIGNED}') = ?", "ts",
                [budget.scope.value])
    return f"SELECT bucket_start AS ts, {column} AS pico FROM {live} WHERE true", "ts", []  # noqa: S608


@dataclass(frozen=True, slots=True)
class Status:
    budget: Budget
    period_start: datetime
    period_end: datetime
    spent: int
    projected: int

    def as_json(self) -> dict[str, Any]:
        amount = self.budget.amount_pico
        return {
            "budget_id": self.budget.id, "scope": self.budget.scope.as_json(), "period": self.budget.period,
            "tz": self.budget.tz, "basis": self.budget.basis,
            "period_start": self.period_start.isoformat().replace("+00:00", "Z"),
            "period_end": self.period_end.isoformat().replace("+00:00", "Z"),
            "thresholds": [budgets.format_threshold(t) for t in self.budget.thresholds],
            "amount": format_decimal(to_usd(amount)), "spent": format_decimal(to_usd(self.spent)),
            "remaining": format_decimal(to_usd(max(amount - self.spent, 0))),
            "fraction": format_decimal((Decimal(self.spent) / Decimal(amount)).quantize(Decimal("0.000001"))),
            "projected": format_decimal(to_usd(self.projected)),
            "exceeded": self.spent >= amount,
        }


class StatusCache:
    """Hourly spend of a budget's rolled-up part, per window, for one state of the rollup
    (watermark, generation, keys): exact until the rollup moves (a flush, about once a second
    under ingest, or a re-rating), so a status costs only the small unrolled tail meanwhile.
    One entry per budget and window, holding the state it was computed for: a newer state
    replaces it, so the cache does not fill up with states that will not come back."""

    def __init__(self, size: int = 1024) -> None:
        self._entries: OrderedDict[tuple, tuple[tuple, dict[datetime, tuple[int, int]]]] = OrderedDict()
        self._lock = threading.Lock()
        self._size = size
        self.hits = self.misses = 0

    def get(self, key: tuple, state: tuple) -> dict[datetime, tuple[int, int]] | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] != state:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[1]

    def put(self, key: tuple, state: tuple, value: dict[datetime, tuple[int, int]]) -> None:
        with self._lock:
            self._entries[key] = (state, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


_HOURLY = ("SELECT date_trunc('hour', {ts}) AS h, coalesce(sum(pico) FILTER (WHERE {ts} >= ?), 0), "
           "coalesce(sum(pico), 0) FROM ({source}) s WHERE {ts} >= ? AND {ts} < ? GROUP BY h")


def _hourly_from(cur: duckdb.DuckDBPyConnection, budget: Budget, table: str, period_start: datetime, lo: datetime,
                 end: datetime) -> dict[datetime, tuple[int, int]]:
    """Per UTC hour in [lo, end): (spend inside the period, all spend), from one FROM item."""
    source, ts, params = _spend_source(budget, table)
    rows = cur.execute(_HOURLY.format(ts=ts, source=source),
                       [naive_utc(period_start), *params, naive_utc(lo), naive_utc(end)]).fetchall()
    return {h.replace(tzinfo=UTC): (int(inside), int(total)) for h, inside, total in rows}


@dataclass(frozen=True, slots=True)
class RollupState:
    """What a read snapshot holds beyond the rollup: its state, the keys' accounts, and the
    unrolled tail as (15-minute bucket, key, cost, list cost). Read once for all the budgets a
    request or an evaluation looks at."""

    watermark: int
    generation: int
    accounts: dict[str, str]
    tail: list[tuple[datetime, str, int, int]]

    @classmethod
    def read(cls, cur: duckdb.DuckDBPyConnection) -> RollupState:
        (watermark, generation), = cur.execute("SELECT watermark, generation FROM rollup_state").fetchall()
        accounts = dict(cur.execute("SELECT api_key_id, account_id FROM api_keys").fetchall())
        sql = f"SELECT bucket_start, api_key_id, cost_pico, list_cost_pico FROM usage_rollup_tail({int(watermark)})"  # noqa: S608
        tail = cur.execute(sql).fetchall()
        return cls(int(watermark), int(generation), accounts, [(b.replace(tzinfo=UTC), k, c, lc) for b, k, c, lc in tail])

    def tail_hourly(self, budget: Budget, period_start: datetime, lo: datetime,
                    end: datetime) -> dict[datetime, tuple[int, int]]:
        out: dict[datetime, tuple[int, int]] = {}
        scope, list_basis = budget.scope, budget.basis != "cost"
        for bucket, api_key_id, cost, list_cost in self.tail:
            if not lo <= bucket < end:
                continue
            if scope.kind == "api_key" and api_key_id != scope.value:
                continue
            if scope.kind == "account" and self.accounts.get(api_key_id, UNASSIGNED) != scope.value:
                continue
            pico = int(list_cost if list_basis else cost)
            hour = bucket.replace(minute=0)
            inside, total = out.get(hour, (0, 0))
            out[hour] = (inside + (pico if bucket >= period_start else 0), total + pico)
        return out


def _hourly(cur: duckdb.DuckDBPyConnection, budget: Budget, period_start: datetime, lo: datetime, end: datetime,
            cache: StatusCache | None, state: RollupState | None) -> dict[datetime, tuple[int, int]]:
    if cache is None or budget.scope.kind == "tag":  # tags are not in the rollup: the ledger answers
        return _hourly_from(cur, budget, live_rollup(cur), period_start, lo, end)
    state = state or RollupState.read(cur)
    keys = len(state.accounts) if budget.scope.kind == "account" else 0
    key = (budget.id, budget.basis, budget.scope, period_start, lo, end)
    version = (state.watermark, state.generation, keys)
    rolled = cache.get(key, version)
    if rolled is None:
        rolled = _hourly_from(cur, budget, "usage_rollup", period_start, lo, end)
        cache.put(key, version, rolled)
    tail = state.tail_hourly(budget, period_start, lo, end)
    if not tail:
        return rolled
    merged = dict(rolled)
    for hour, (inside, total) in tail.items():
        before = merged.get(hour, (0, 0))
        merged[hour] = (before[0] + inside, before[1] + total)
    return merged


def status(cur: duckdb.DuckDBPyConnection, budget: Budget, *, now: datetime, with_projection: bool = True,
           cache: StatusCache | None = None, state: RollupState | None = None) -> Status:
    """A budget's spend in its current period and, with the projection, its forecast at the end.
    One pass over spend per hour, from the profile's first day (or the period's start, if earlier)
    to the period's end (period bounds fall on 15-minute rollup boundaries, so hours that straddle
    them are split exactly by the in-period filter)."""
    start, end = budgets.period_bounds(budget.period, budget.tz, now)
    history_start = budgets.utc_hour(now) - timedelta(days=budgets.PROFILE_DAYS)
    lo = min(start, history_start) if with_projection else start
    hourly = _hourly(cur, budget, start, lo, end, cache, state)
    spent = sum(inside for inside, _ in hourly.values())
    if not with_projection:
        return Status(budget, start, end, spent, spent)
    totals = {hour: total for hour, (_, total) in hourly.items()}
    projected = budgets.project(spent=spent, now=now, period_start=start, period_end=end, hourly=totals)
    return Status(budget, start, end, spent, projected)


def key_status(store: Any, *, api_key_id: str, now: datetime) -> dict[str, Any]:
    """Every budget covering a key, with its status: what a gateway asks before serving a request."""
    registered = store.key(api_key_id)
    account = registered.account_id if registered else UNASSIGNED
    with store.reading() as cur:
        covering = [b for b in active(cur) if b.scope.covers(api_key_id=api_key_id, account_id=account)]
        state = RollupState.read(cur) if covering else None
        statuses = [status(cur, b, now=now, cache=store.status_cache, state=state).as_json() for b in covering]
    return {"api_key_id": api_key_id, "account_id": account, "budgets": statuses,
            "exceeded": any(s["exceeded"] for s in statuses)}


# --- evaluation ------------------------------------------------------------------------------------------


def _payload(kind: str, now: datetime, data: dict[str, Any]) -> str:
    return json.dumps({"type": kind, "timestamp": now.isoformat().replace("+00:00", "Z"), "data": data},
                      separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Decision:
    """An alert that is due: decided on a read snapshot, written by `write_alerts`."""

    dedupe_key: str
    kind: str
    budget: Budget | None
    api_key_id: str | None
    period_start: datetime | None
    payload: str


def write_alerts(con: duckdb.DuckDBPyConnection, decisions: list[Decision], *, now: datetime) -> list[str]:
    """Insert the decided alerts (on the writer thread). The UNIQUE dedupe key makes a decision that
    was already written, by an earlier evaluation or before a crash, a no-op. Returns the keys written."""
    written = []
    for d in decisions:
        url = d.budget.webhook_url if d.budget else None
        if url is None:
            state = "no_endpoint"
        elif d.budget is not None and d.budget.webhook_disabled_at is not None:
            state = "disabled"
        else:
            state = "pending"
        (seq,) = con.execute("SELECT coalesce(max(seq), 0) + 1 FROM alerts").fetchall()[0]
        inserted = con.execute(
            "INSERT OR IGNORE INTO alerts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, NULL) RETURNING id",
            ["msg_" + secrets.token_hex(12), seq, d.dedupe_key, d.kind, d.budget.id if d.budget else None,
             d.api_key_id, naive_utc(d.period_start) if d.period_start else None, d.payload, url, state,
             naive_utc(now), naive_utc(now)],
        ).fetchall()
        if inserted:
            written.append(d.dedupe_key)
    return written


def decide(cur: duckdb.DuckDBPyConnection, *, now: datetime, keys: dict[str, str],
           anomaly_min_pico: int, cache: StatusCache | None = None) -> list[Decision]:
    """The alerts due now and not yet written, decided on one read snapshot (spend only grows, so a
    crossing seen here is still a crossing when it is written). `keys`: api_key_id -> account_id."""
    decisions: list[Decision] = []
    all_budgets = active(cur)
    state = RollupState.read(cur) if all_budgets and cache is not None else None
    for budget in all_budgets:
        st = status(cur, budget, now=now, with_projection=budget.forecast, cache=cache, state=state)
        period_key = st.period_start.isoformat()
        fired = {row[0] for row in cur.execute(
            "SELECT dedupe_key FROM alerts WHERE budget_id = ? AND period_start = ?",
            [budget.id, naive_utc(st.period_start)]).fetchall()}
        fired_thresholds = {k.rsplit(":", 1)[1] for k in fired if k.startswith("threshold:")}
        base = st.as_json()
        for threshold in budgets.due_thresholds(amount=budget.amount_pico, spent=st.spent,
                                                thresholds=budget.thresholds, fired=fired_thresholds):
            text = budgets.format_threshold(threshold)
            decisions.append(Decision(f"threshold:{budget.id}:{period_key}:{text}", THRESHOLD_CROSSED, budget, None,
                                      st.period_start, _payload(THRESHOLD_CROSSED, now, {**base, "threshold": text})))
        key = f"forecast:{budget.id}:{period_key}"
        if budget.forecast and key not in fired and st.spent < budget.amount_pico <= st.projected:
            decisions.append(Decision(key, FORECAST_EXCEEDED, budget, None, st.period_start,
                                      _payload(FORECAST_EXCEEDED, now, base)))
    decisions += _anomalies(cur, now=now, keys=keys, budgets_=all_budgets, min_pico=anomaly_min_pico)
    return decisions


def _anomalies(cur: duckdb.DuckDBPyConnection, *, now: datetime, keys: dict[str, str], budgets_: list[Budget],
               min_pico: int) -> list[Decision]:
    today = now.astimezone(UTC).date()
    first = today - timedelta(days=budgets.ANOMALY_DAYS)
    rows = cur.execute(
        f"SELECT api_key_id, bucket_start::DATE AS day, sum(cost_pico) FROM {live_rollup(cur)} "  # noqa: S608
        "WHERE bucket_start >= ? AND bucket_start < ? GROUP BY ALL",
        [datetime(first.year, first.month, first.day), datetime(today.year, today.month, today.day) + timedelta(days=1)],
    ).fetchall()
    fired = {row[0] for row in cur.execute(
        "SELECT dedupe_key FROM alerts WHERE type = ? AND dedupe_key LIKE ?",
        [SPEND_ANOMALY, f"anomaly:%:{today.isoformat()}"]).fetchall()}
    per_key: dict[str, dict[Any, int]] = {}
    for key_id, day, pico in rows:
        per_key.setdefault(key_id, {})[day] = int(pico)
    decisions = []
    for key_id, days in per_key.items():
        dedupe = f"anomaly:{key_id}:{today.isoformat()}"
        spent_today = days.get(today, 0)
        previous = [days.get(first + timedelta(days=i), 0) for i in range(budgets.ANOMALY_DAYS)]
        if dedupe in fired or not budgets.is_anomaly(today=spent_today, previous_days=previous, min_pico=min_pico):
            continue
        account = keys.get(key_id, UNASSIGNED)
        covering = [b for b in budgets_ if b.webhook_url and b.scope.covers(api_key_id=key_id, account_id=account)]
        data = {"api_key_id": key_id, "account_id": account, "day": today.isoformat(),
                "spent": format_decimal(to_usd(spent_today)),
                "baseline_median": format_decimal(to_usd(int(sorted(previous)[len(previous) // 2]))),
                "previous_max": format_decimal(to_usd(max(previous))),
                "rule": f"today >= min and > {budgets.ANOMALY_FACTOR} x the median of the last "
                        f"{budgets.ANOMALY_DAYS} days and > their maximum"}
        decisions.append(Decision(dedupe, SPEND_ANOMALY, covering[0] if covering else None, key_id, None,
                                  _payload(SPEND_ANOMALY, now, data)))
    return decisions


# --- the outbox ----------------------------------------------------------------------------------------------


def list_alerts(cur: duckdb.DuckDBPyConnection, *, budget_ids: list[str] | None = None,
                api_key_id: str | None = None) -> list[dict[str, Any]]:
    rows = cur.execute("SELECT id, type, budget_id, api_key_id, period_start, payload, webhook_url, status, "
                       "attempts, next_attempt_at, created_at, delivered_at FROM alerts ORDER BY seq").fetchall()
    attempts: dict[str, list[dict[str, Any]]] = {}
    for alert_id, n, at, code, error, ms in cur.execute(
            "SELECT alert_id, attempt, attempted_at, status_code, error, duration_ms FROM alert_attempts "
            "ORDER BY alert_id, attempt").fetchall():
        attempts.setdefault(alert_id, []).append({"attempt": n, "at": _iso(at), "status_code": code, "error": error,
                                                  "duration_ms": ms})
    out = []
    for (aid, kind, bid, key_id, period_start, payload, url, state, n, next_at, created, delivered) in rows:
        if budget_ids is not None and bid not in budget_ids and key_id != api_key_id:
            continue
        out.append({"id": aid, "type": kind, "budget_id": bid, "api_key_id": key_id,
                    "period_start": _iso(period_start), "status": state, "attempts": n,
                    "next_attempt_at": _iso(next_at) if state == "pending" else None, "created_at": _iso(created),
                    "delivered_at": _iso(delivered), "webhook_url": url, "payload": json.loads(payload),
                    "delivery_attempts": attempts.get(aid, [])})
    return out


def _iso(ts: datetime | None) -> str | None:
    return ts.isoformat() + "Z" if ts else None


@dataclass(frozen=True, slots=True)
class Due:
    id: str
    budget_id: str | None
    url: str
    payload: str
    attempts: int
    secret: str


def due(cur: duckdb.DuckDBPyConnection, *, now: datetime) -> list[Due]:
    """Pending alerts whose time has come, each the earliest pending one of its URL (so a URL
    receives its alerts in order)."""
    rows = cur.execute("""
        SELECT a.id, a.budget_id, a.webhook_url, a.payload, a.attempts, b.webhook_secret
        FROM alerts a JOIN budgets b ON b.id = a.budget_id
        WHERE a.status = 'pending' AND a.next_attempt_at <= ?
          AND NOT EXISTS (SELECT 1 FROM alerts e WHERE e.status = 'pending' AND e.webhook_url = a.webhook_url
                          AND e.seq < a.seq)
        ORDER BY a.seq
    """, [naive_utc(now)]).fetchall()
    return [Due(*row) for row in rows]


def record_attempt(con: duckdb.DuckDBPyConnection, item: Due, *, now: datetime, status_code: int | None,
                   error: str | None, duration_ms: int, next_delay: float | None) -> str:
    """Record one delivery attempt and move the alert on: delivered, retried later, failed, or,
    on 410 Gone, disabled together with its endpoint. Returns the alert's new status."""
    attempt = item.attempts + 1
    con.execute("INSERT INTO alert_attempts VALUES (?, ?, ?, ?, ?, ?)",
                [item.id, attempt, naive_utc(now), status_code, error, duration_ms])
    if status_code is not None and 200 <= status_code < 300:
        con.execute("UPDATE alerts SET status = 'delivered', attempts = ?, delivered_at = ? WHERE id = ?",
                    [attempt, naive_utc(now), item.id])
        return "delivered"
    if status_code == 410:
        con.execute("UPDATE budgets SET webhook_disabled_at = ? WHERE webhook_url = ?", [naive_utc(now), item.url])
        con.execute("UPDATE alerts SET attempts = ? WHERE id = ?", [attempt, item.id])
        con.execute("UPDATE alerts SET status = 'disabled' WHERE status = 'pending' AND webhook_url = ?", [item.url])
        return "disabled"
    if next_delay is None:
        con.execute("UPDATE alerts SET status = 'failed', attempts = ? WHERE id = ?", [attempt, item.id])
        return "failed"
    con.execute("UPDATE alerts SET attempts = ?, next_attempt_at = ? WHERE id = ?",
                [attempt, naive_utc(now + timedelta(seconds=next_delay)), item.id])
    return "pending"
