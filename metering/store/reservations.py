"""The reservations table: holds taken, settled (by the writer, when the usage record arrives),
released and expired."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb

from metering.timewindows import naive_utc


@dataclass(frozen=True, slots=True)
class Row:
    request_id: str
    api_key_id: str
    model: str
    max_input_tokens: int
    max_output_tokens: int
    tags: dict[str, str] | None
    hold_pico: int
    list_hold_pico: int
    rate_version_id: int
    budget_ids: tuple[str, ...]
    status: str  # held | settled | released | expired
    created_at: datetime
    expires_at: datetime
    closed_at: datetime | None


_COLUMNS = ("request_id, api_key_id, model, max_input_tokens, max_output_tokens, tags, hold_pico, list_hold_pico, "
            "rate_version_id, budget_ids, status, created_at, expires_at, closed_at")


def _row(values: tuple) -> Row:
    (rid, key, model, max_in, max_out, tags, hold, list_hold, version, budgets, status, created, expires,
     closed) = values
    return Row(rid, key, model, int(max_in), int(max_out), json.loads(tags) if tags else None, int(hold),
               int(list_hold), int(version), tuple(json.loads(budgets)), status, created.replace(tzinfo=UTC),
               expires.replace(tzinfo=UTC), closed.replace(tzinfo=UTC) if closed else None)


def insert(con: duckdb.DuckDBPyConnection, row: Row) -> None:
    con.execute(
        f"INSERT INTO reservations ({_COLUMNS}) VALUES ({', '.join('?' * 14)})",  # noqa: S608
        [row.request_id, row.api_key_id, row.model, row.max_input_tokens, row.max_output_tokens,
         json.dumps(row.tags, sort_keys=True) if row.tags else None, row.hold_pico, row.list_hold_pico,
         row.rate_version_id, json.dumps(list(row.budget_ids)), row.status, naive_utc(row.created_at),
         naive_utc(row.expires_at), None],
    )


def get(cur: duckdb.DuckDBPyConnection, request_id: str) -> Row | None:
    rows = cur.execute(f"SELECT {_COLUMNS} FROM reservations WHERE request_id = ?", [request_id]).fetchall()  # noqa: S608
    return _row(rows[0]) if rows else None


def held(cur: duckdb.DuckDBPyConnection) -> list[Row]:
    rows = cur.execute(f"SELECT {_COLUMNS} FROM reservations WHERE status = 'held'").fetchall()  # noqa: S608
    return [_row(r) for r in rows]


def close(con: duckdb.DuckDBPyConnection, request_ids: list[str], *, status: str, now: datetime) -> list[str]:
    """Held reservations -> released or expired; returns the ids that moved."""
    if not request_ids:
        return []
    rows = con.execute("UPDATE reservations SET status = ?, closed_at = ? WHERE status = 'held' "
                       "AND list_contains(?, request_id) RETURNING request_id",
                       [status, naive_utc(now), request_ids]).fetchall()
    return [r[0] for r in rows]


def lookup(cur: duckdb.DuckDBPyConnection, request_id: str) -> tuple[Row | None, bool]:
    """The reservation with this request_id, if any, and whether a usage record with it is stored."""
    rows = cur.execute(f"SELECT {_COLUMNS}, (SELECT count(*) FROM ledger WHERE request_id = $id) AS stored "  # noqa: S608
                       "FROM (SELECT 1) LEFT JOIN reservations ON request_id = $id", {"id": request_id}).fetchall()
    *values, stored = rows[0]
    return (_row(tuple(values)) if values[0] is not None else None), bool(stored)


def as_dict(row: Row) -> dict[str, Any]:
    return {"request_id": row.request_id, "api_key_id": row.api_key_id, "model": row.model, "status": row.status}
