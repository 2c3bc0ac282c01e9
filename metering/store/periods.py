"""Closed billing periods: the stored figures of each closed month (statements and FOCUS rows), and
what was billed for each usage month, which the corrections of the first open month are measured
against. Written only by a close (one transaction on the writer thread); never updated."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import duckdb
import pyarrow as pa

from metering.store.db import naive_utc

PERIOD_COLUMNS = (
    "month", "tz", "period_start", "period_end", "closed_at", "closed_by", "ledger_seq", "rounding", "accounts",
    "statement_lines", "focus_rows", "requests", "unpriced_requests", "amount", "list_amount", "correction_amount",
)
STATEMENT_COLUMNS = (
    "month", "account_id", "requests", "unpriced_requests", "amount", "amount_rounded", "list_amount",
    "list_amount_rounded", "correction_amount",
)
LINE_COLUMNS = (
    "month", "account_id", "line_no", "line_type", "usage_month", "api_key_id", "model", "rate_version_id",
    "token_class", "quantity", "price", "list_price", "amount", "amount_rounded", "list_amount",
    "list_amount_rounded",
)
FOCUS_COLUMNS = (
    "month", "row_no", "charge_class", "usage_month", "charge_start", "charge_end", "billing_start", "billing_end",
    "account_id", "api_key_id", "key_name", "model", "rate_version_id", "token_class", "tags", "quantity", "price",
    "list_price", "amount", "list_amount",
)
_TIMESTAMPS = ("period_start", "period_end", "closed_at")


def _period(row: tuple) -> dict[str, Any]:
    out = dict(zip(PERIOD_COLUMNS, row, strict=True))
    for name in _TIMESTAMPS:
        out[name] = out[name].replace(tzinfo=UTC)
    return out


_SELECT_PERIODS = f"SELECT {', '.join(PERIOD_COLUMNS)} FROM billing_periods"  # noqa: S608 (constant columns)


def periods(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Every closed month, oldest first."""
    return [_period(row) for row in cur.execute(_SELECT_PERIODS + " ORDER BY month").fetchall()]


def period(cur: duckdb.DuckDBPyConnection, month: str) -> dict[str, Any] | None:
    rows = cur.execute(_SELECT_PERIODS + " WHERE month = ?", [month]).fetchall()
    return _period(rows[0]) if rows else None


def last_seq(cur: duckdb.DuckDBPyConnection) -> int:
    return int(cur.execute("SELECT coalesce(max(seq), 0) FROM ledger").fetchall()[0][0])


def first_usage(cur: duckdb.DuckDBPyConnection, *, after: datetime, before: datetime) -> datetime | None:
    """The earliest occurred_at in [after, before), or None."""
    (first,) = cur.execute("SELECT min(occurred_at) FROM ledger WHERE occurred_at >= ? AND occurred_at < ?",
                           [naive_utc(after), naive_utc(before)]).fetchall()[0]
    return first.replace(tzinfo=UTC) if first is not None else None


def _insert(con: duckdb.DuckDBPyConnection, table: str, columns: tuple[str, ...], rows: pa.Table) -> None:
    if rows.num_rows == 0:
        return
    con.register("close_rows", rows.select(list(columns)))
    try:
        con.execute(f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(columns)} FROM close_rows")  # noqa: S608 (constant names)
    finally:
        con.unregister("close_rows")


def insert_close(con: duckdb.DuckDBPyConnection, *, period_row: dict[str, Any], statements: pa.Table,
                 lines: pa.Table, focus: pa.Table) -> None:
    """Store a closed month; the caller's transaction (the writer's) commits it whole or not at all."""
    values = [naive_utc(v) if k in _TIMESTAMPS else v for k, v in ((c, period_row[c]) for c in PERIOD_COLUMNS)]
    con.execute(f"INSERT INTO billing_periods ({', '.join(PERIOD_COLUMNS)}) "  # noqa: S608 (constant columns)
                f"VALUES ({', '.join('?' * len(PERIOD_COLUMNS))})", values)
    _insert(con, "closed_statements", STATEMENT_COLUMNS, statements)
    _insert(con, "closed_statement_lines", LINE_COLUMNS, lines)
    _insert(con, "closed_focus_lines", FOCUS_COLUMNS, focus)


def statement_header(cur: duckdb.DuckDBPyConnection, month: str, account_id: str) -> dict[str, Any] | None:
    rows = cur.execute(f"SELECT {', '.join(STATEMENT_COLUMNS)} FROM closed_statements "  # noqa: S608 (constant columns)
                       "WHERE month = ? AND account_id = ?", [month, account_id]).fetchall()
    return dict(zip(STATEMENT_COLUMNS, rows[0], strict=True)) if rows else None


def statement_lines(cur: duckdb.DuckDBPyConnection, month: str, account_id: str) -> pa.Table:
    """The stored lines of one account's closed statement, in line order."""
    return cur.sql(f"SELECT {', '.join(LINE_COLUMNS)} FROM closed_statement_lines "  # noqa: S608 (constant columns)
                   "WHERE month = $month AND account_id = $account ORDER BY line_no",
                   params={"month": month, "account": account_id}).to_arrow_table()


def focus_lines(cur: duckdb.DuckDBPyConnection, months: list[str]) -> pa.Table:
    """The stored FOCUS rows of these closed months, in row order."""
    return cur.sql(f"SELECT {', '.join(FOCUS_COLUMNS)} FROM closed_focus_lines "  # noqa: S608 (constant columns)
                   "WHERE list_contains($months, month) ORDER BY month, row_no",
                   params={"months": months}).to_arrow_table()


def billed_statement_sums(cur: duckdb.DuckDBPyConnection, *, before: str) -> pa.Table:
    """What the statements of closed months before `before` billed, per usage month x account x key x
    model x rate version x class (usage and earlier corrections together)."""
    return cur.sql("""
        SELECT usage_month, account_id, api_key_id, model, rate_version_id, token_class,
               sum(quantity)::BIGINT AS quantity, sum(amount)::DECIMAL(38, 12) AS amount,
               sum(list_amount)::DECIMAL(38, 12) AS list_amount
        FROM closed_statement_lines WHERE month < $before
        GROUP BY ALL
    """, params={"before": before}).to_arrow_table()


def billed_focus_sums(cur: duckdb.DuckDBPyConnection, *, before: str) -> pa.Table:
    """What the FOCUS rows of closed months before `before` billed, per usage month x account x key x
    model x rate version x class x tag set."""
    return cur.sql("""
        SELECT usage_month, account_id, api_key_id, model, rate_version_id, token_class, tags,
               sum(quantity)::BIGINT AS quantity, sum(amount)::DECIMAL(38, 12) AS amount,
               sum(list_amount)::DECIMAL(38, 12) AS list_amount
        FROM closed_focus_lines WHERE month < $before
        GROUP BY ALL
    """, params={"before": before}).to_arrow_table()
