"""Each budget's spend per 15-minute slot (`budget_spend`), kept exact in the transaction that changes
it: the writer advances it for the rows it inserts, a new budget is filled from the ledger when it is
made, and a re-rating or a key's registration recomputes the slots it touches. A budget's status then
reads its own few rows instead of summing the ledger.

Every real UTC offset is a multiple of 15 minutes, so every budget period (a local day, week or month)
is a union of slots. Unpriced rows add nothing. Scopes are matched as the budget rules say (metering.
budgets.Scope): a key, an account ('unassigned' for unregistered keys), a tag value, or everything.
"""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb

from metering.access import UNASSIGNED
from metering.timewindows import naive_utc

_MATCH = f"""
    b.deleted_at IS NULL AND (
        b.scope_kind = 'all'
        OR (b.scope_kind = 'api_key' AND b.scope_value = l.api_key_id)
        OR (b.scope_kind = 'account' AND b.scope_value = coalesce(k.account_id, '{UNASSIGNED}'))
        OR (b.scope_kind = 'tag' AND l.tags[b.scope_tag] = b.scope_value))
"""


def _sums(where: str, budgets: str = "") -> str:
    """Slot sums of the ledger rows matching `where`, per budget (restricted to `budgets`, a fixed
    condition over b, when given) from each budget's tracked_from on."""
    return f"""
        SELECT b.id AS budget_id, time_bucket(INTERVAL 15 MINUTE, l.occurred_at) AS slot,
               coalesce(sum(l.cost_pico), 0)::HUGEINT AS cost_pico,
               coalesce(sum(l.list_cost_pico), 0)::HUGEINT AS list_cost_pico
        FROM ledger l
        LEFT JOIN api_keys k ON k.api_key_id = l.api_key_id
        JOIN budgets b ON {_MATCH} AND l.occurred_at >= b.tracked_from {budgets}
        WHERE {where} AND l.rate_version_id IS NOT NULL
        GROUP BY ALL
    """  # noqa: S608 (fixed SQL)


ADVANCE = (f"INSERT INTO budget_spend BY NAME {_sums('l.seq BETWEEN $lo AND $hi')} ON CONFLICT DO UPDATE SET "
           "cost_pico = cost_pico + excluded.cost_pico, list_cost_pico = list_cost_pico + excluded.list_cost_pico")


def advance(con: duckdb.DuckDBPyConnection, *, lo: int, hi: int) -> None:
    """Add the ledger rows with seq in [lo, hi] (just inserted) to the budgets they count for."""
    con.execute(ADVANCE, {"lo": lo, "hi": hi})


def track(con: duckdb.DuckDBPyConnection, *, budget_id: str, since: datetime) -> None:
    """Start a budget's counters at `since` (a slot boundary), filled from the ledger."""
    con.execute("UPDATE budgets SET tracked_from = ? WHERE id = ?", [naive_utc(since), budget_id])
    con.execute(f"INSERT INTO budget_spend BY NAME {_sums('true', 'AND b.id = $id')}", {"id": budget_id})


def refresh(con: duckdb.DuckDBPyConnection, *, lo: datetime, hi: datetime, budget_ids: list[str] | None = None) -> None:
    """Recompute the slots in [lo, hi) (slot boundaries) of every budget, or of `budget_ids`, from the ledger."""
    only = "AND list_contains($ids, b.id)" if budget_ids is not None else ""
    params: dict = {"lo": naive_utc(lo), "hi": naive_utc(hi)}
    if budget_ids is not None:
        params["ids"] = budget_ids
    delete_only = "AND list_contains($ids, budget_id)" if budget_ids is not None else ""
    con.execute(f"DELETE FROM budget_spend WHERE slot >= $lo AND slot < $hi {delete_only}", params)  # noqa: S608
    con.execute(f"INSERT INTO budget_spend BY NAME "
                f"{_sums('l.occurred_at >= $lo AND l.occurred_at < $hi', only)}", params)


def forget(con: duckdb.DuckDBPyConnection, *, budget_id: str) -> None:
    con.execute("DELETE FROM budget_spend WHERE budget_id = ?", [budget_id])


def windows(cur: duckdb.DuckDBPyConnection,
            asked: list[tuple[str, str, datetime, datetime, datetime]]) -> dict[str, tuple[int, dict[datetime, int]]]:
    """Several budgets' counters in one query. `asked`: (budget_id, basis (cost | list_cost), period
    start, history start, period end). Per budget: (spend in [period start, period end), all spend per
    UTC hour in [history start, period end), hours with spend only). A history start at the period's
    end asks for the spend alone."""
    if not asked:
        return {}
    values = ", ".join("(?, ?, ?::TIMESTAMP, ?::TIMESTAMP, ?::TIMESTAMP)" for _ in asked)
    params = [p for bid, basis, start, hist, end in asked
              for p in (bid, basis == "list_cost", naive_utc(start), naive_utc(hist), naive_utc(end))]
    rows = cur.execute(f"""
        WITH w(budget_id, list_basis, period_start, hist, period_end) AS (VALUES {values})
        SELECT w.budget_id, CASE WHEN s.slot >= w.hist THEN date_trunc('hour', s.slot) END AS h,
               (sum(CASE WHEN w.list_basis THEN s.list_cost_pico ELSE s.cost_pico END)
                   FILTER (WHERE s.slot >= w.period_start))::VARCHAR AS inside,
               sum(CASE WHEN w.list_basis THEN s.list_cost_pico ELSE s.cost_pico END)::VARCHAR AS total
        FROM budget_spend s JOIN w ON s.budget_id = w.budget_id
        WHERE s.slot >= least(w.period_start, w.hist) AND s.slot < w.period_end
        GROUP BY ALL""", params).fetchall()  # noqa: S608 (fixed SQL; values are parameters)
    # The sums come as text: exact, and about twice as fast to bring into Python as HUGEINTs.
    out: dict[str, tuple[int, dict[datetime, int]]] = {bid: (0, {}) for bid, *_ in asked}
    for bid, hour, inside, total in rows:
        spent, hourly = out[bid]
        if hour is not None:
            hourly[hour.replace(tzinfo=UTC)] = int(total)
        out[bid] = (spent + int(inside or 0), hourly)
    return out


def spent_in(cur: duckdb.DuckDBPyConnection, windows: list[tuple[str, str, datetime, datetime]]) -> dict[str, int]:
    """Spend of several budgets in one query: (budget_id, basis, start, end) -> budget_id: pico."""
    if not windows:
        return {}
    sql = " UNION ALL ".join(
        f"SELECT ? AS id, coalesce(sum({'cost_pico' if basis == 'cost' else 'list_cost_pico'}), 0) "  # noqa: S608
        "FROM budget_spend WHERE budget_id = ? AND slot >= ? AND slot < ?" for _, basis, _, _ in windows)
    params = [p for bid, _, start, end in windows for p in (bid, bid, naive_utc(start), naive_utc(end))]
    return {bid: int(pico) for bid, pico in cur.execute(sql, params).fetchall()}
