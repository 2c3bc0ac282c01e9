"""Budgets, their spend, and the alert outbox: the tables and the SQL, nothing of the rules.

Identifiers come from fixed choices; values are bound parameters.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import duckdb

from metering.access import UNASSIGNED
from metering.budgets import Budget, Scope
from metering.errors import NotFound
from metering.store import spend
from metering.store.queries import live_rollup
from metering.timewindows import naive_utc

_COLUMNS = ("id, scope_kind, scope_value, scope_tag, period, tz, amount_pico, basis, thresholds, forecast, "
            "webhook_url, webhook_secret, webhook_disabled_at, created_at, enforce")


def _budget(row: tuple) -> Budget:
    (bid, kind, value, tag, period, tz, amount, basis, thresholds, forecast, url, secret, disabled,
     created, enforce) = row
    return Budget(
        id=bid, scope=Scope(kind, value, tag), period=period, tz=tz, amount_pico=int(amount), basis=basis,
        thresholds=tuple(Decimal(t) for t in json.loads(thresholds)), forecast=bool(forecast), webhook_url=url,
        webhook_secret=secret, webhook_disabled_at=disabled.replace(tzinfo=UTC) if disabled else None,
        created_at=created.replace(tzinfo=UTC), enforce=bool(enforce),
    )


def insert(con: duckdb.DuckDBPyConnection, values: dict[str, Any], *, now: datetime, track_from: datetime) -> Budget:
    budget = Budget(id="bud_" + secrets.token_hex(8), webhook_disabled_at=None, created_at=now.astimezone(UTC),
                    **values)
    con.execute(
        f"INSERT INTO budgets ({_COLUMNS}, deleted_at) VALUES ({', '.join('?' * 16)})",  # noqa: S608
        [budget.id, budget.scope.kind, budget.scope.value, budget.scope.tag_name, budget.period, budget.tz,
         budget.amount_pico, budget.basis, json.dumps([str(t) for t in budget.thresholds]), budget.forecast,
         budget.webhook_url, budget.webhook_secret, None, naive_utc(now), budget.enforce, None],
    )
    spend.track(con, budget_id=budget.id, since=track_from)
    return budget


def active(cur: duckdb.DuckDBPyConnection) -> list[Budget]:
    rows = cur.execute(f"SELECT {_COLUMNS} FROM budgets WHERE deleted_at IS NULL ORDER BY created_at, id"  # noqa: S608
                       ).fetchall()
    return [_budget(r) for r in rows]


def all_budgets(cur: duckdb.DuckDBPyConnection) -> list[Budget]:
    """Every budget ever made, deleted ones included (their alerts stay)."""
    return [_budget(r) for r in cur.execute(f"SELECT {_COLUMNS} FROM budgets ORDER BY created_at, id").fetchall()]  # noqa: S608


def get(cur: duckdb.DuckDBPyConnection, budget_id: str) -> Budget:
    rows = cur.execute(f"SELECT {_COLUMNS} FROM budgets WHERE id = ? AND deleted_at IS NULL",  # noqa: S608
                       [budget_id]).fetchall()
    if not rows:
        raise NotFound(f"no budget {budget_id[:200]!r}")
    return _budget(rows[0])


def delete(con: duckdb.DuckDBPyConnection, budget_id: str, *, now: datetime) -> None:
    get(con, budget_id)
    con.execute("UPDATE budgets SET deleted_at = ? WHERE id = ?", [naive_utc(now), budget_id])
    spend.forget(con, budget_id=budget_id)


def untracked(cur: duckdb.DuckDBPyConnection) -> list[str]:
    """Active budgets without spend counters (made before they existed)."""
    return [r[0] for r in cur.execute("SELECT id FROM budgets WHERE deleted_at IS NULL AND tracked_from IS NULL")
            .fetchall()]


# --- spend ---------------------------------------------------------------------------------------------


def _spend_source(budget: Budget, live: str) -> tuple[str, list[Any]]:
    """(SELECT ts, pico FROM ... WHERE scope, params) for a budget's scope; the money column by basis."""
    column = "cost_pico" if budget.basis == "cost" else "list_cost_pico"
    scope = budget.scope
    if scope.kind == "tag":  # tags are not in the rollup: the ledger answers
        key_filter, key_param = (" AND api_key_id = ?", [scope.key]) if scope.key is not None else ("", [])
        return (f"SELECT occurred_at AS ts, {column} AS pico FROM ledger WHERE tags[?] = ?{key_filter}",  # noqa: S608
                [scope.tag_name, scope.value, *key_param])
    if scope.kind == "api_key":
        return f"SELECT bucket_start AS ts, {column} AS pico FROM {live} WHERE api_key_id = ?", [scope.value]  # noqa: S608
    if scope.kind == "account":
        return (f"SELECT bucket_start AS ts, {column} AS pico FROM {live} r "  # noqa: S608
                f"LEFT JOIN api_keys k USING (api_key_id) WHERE coalesce(k.account_id, '{UNASSIGNED}') = ?",
                [scope.value])
    return f"SELECT bucket_start AS ts, {column} AS pico FROM {live}", []  # noqa: S608


_HOURLY = ("SELECT date_trunc('hour', ts) AS h, coalesce(sum(pico) FILTER (WHERE ts >= ?), 0), "
           "coalesce(sum(pico), 0) FROM ({source}) s WHERE ts >= ? AND ts < ? GROUP BY h")


def hourly(cur: duckdb.DuckDBPyConnection, budget: Budget, *, period_start: datetime, lo: datetime, end: datetime,
           rolled_only: bool = False) -> dict[datetime, tuple[int, int]]:
    """Per UTC hour in [lo, end): (spend inside the period, all spend) of the budget's scope. From the
    live rollup (exact now), or with `rolled_only` from the rolled-up part alone (see RollupState)."""
    table = "usage_rollup" if rolled_only else live_rollup(cur)
    source, params = _spend_source(budget, table)
    rows = cur.execute(_HOURLY.format(source=source),
                       [naive_utc(period_start), *params, naive_utc(lo), naive_utc(end)]).fetchall()
    return {h.replace(tzinfo=UTC): (int(inside), int(total)) for h, inside, total in rows}


@dataclass(frozen=True, slots=True)
class RollupState:
    """What a read snapshot holds beyond the rolled-up part: its state (watermark, generation), the
    keys' accounts, and the unrolled tail as (15-minute bucket, key, cost, list cost)."""

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

    def tail_hourly(self, budget: Budget, *, period_start: datetime, lo: datetime,
                    end: datetime) -> dict[datetime, tuple[int, int]]:
        """`hourly` of the unrolled tail, for scopes the rollup holds (not tags)."""
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


def daily_spend_by_key(cur: duckdb.DuckDBPyConnection, *, start: datetime, end: datetime) -> list[tuple[str, Any, int]]:
    """(key, UTC day, cost) for [start, end)."""
    rows = cur.execute(
        f"SELECT api_key_id, bucket_start::DATE AS day, sum(cost_pico) FROM {live_rollup(cur)} "  # noqa: S608
        "WHERE bucket_start >= ? AND bucket_start < ? GROUP BY ALL", [naive_utc(start), naive_utc(end)]).fetchall()
    return [(k, d, int(p)) for k, d, p in rows]


def key_has_tag(cur: duckdb.DuckDBPyConnection, *, api_key_id: str, name: str, value: str, start: datetime,
                end: datetime) -> bool:
    """Did the key send a record carrying this tag in [start, end)?"""
    rows = cur.execute("SELECT 1 FROM ledger WHERE api_key_id = ? AND tags[?] = ? AND occurred_at >= ? "
                       "AND occurred_at < ? LIMIT 1", [api_key_id, name, value, naive_utc(start), naive_utc(end)])
    return bool(rows.fetchall())


# --- the alert outbox ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewAlert:
    dedupe_key: str
    kind: str
    budget_id: str | None
    api_key_id: str | None
    period_start: datetime | None
    payload: str
    webhook_url: str | None
    status: str  # pending | disabled | no_endpoint


def insert_alerts(con: duckdb.DuckDBPyConnection, alerts: list[NewAlert], *, now: datetime) -> list[str]:
    """Insert alerts; the UNIQUE dedupe key makes one already written a no-op. Returns the keys written."""
    written = []
    for a in alerts:
        (seq,) = con.execute("SELECT coalesce(max(seq), 0) + 1 FROM alerts").fetchall()[0]
        inserted = con.execute(
            "INSERT OR IGNORE INTO alerts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, NULL) RETURNING id",
            ["msg_" + secrets.token_hex(12), seq, a.dedupe_key, a.kind, a.budget_id, a.api_key_id,
             naive_utc(a.period_start) if a.period_start else None, a.payload, a.webhook_url, a.status,
             naive_utc(now), naive_utc(now)],
        ).fetchall()
        if inserted:
            written.append(a.dedupe_key)
    return written


def fired_keys(cur: duckdb.DuckDBPyConnection, *, budget_id: str, period_start: datetime) -> set[str]:
    rows = cur.execute("SELECT dedupe_key FROM alerts WHERE budget_id = ? AND period_start = ?",
                       [budget_id, naive_utc(period_start)]).fetchall()
    return {row[0] for row in rows}


def fired_like(cur: duckdb.DuckDBPyConnection, *, kind: str, pattern: str) -> set[str]:
    rows = cur.execute("SELECT dedupe_key FROM alerts WHERE type = ? AND dedupe_key LIKE ?", [kind, pattern])
    return {row[0] for row in rows.fetchall()}


def list_alerts(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Every alert in creation order with its delivery attempts."""
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
