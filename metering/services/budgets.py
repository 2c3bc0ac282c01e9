"""Budgets: create, read, delete, and their status, as each principal may see them.

What a key sees (CONTRACT.md "What a key sees"): its own budgets whole (but the webhook); of a wider
budget that covers it (its account, a tag it spent under, everything) the terms, `exceeded` and its own
`key_spent`, never a figure that depends on another key's usage; no webhook URL or secret anywhere.
Admin and the gateway (ingest, for enforcement) see every figure.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import duckdb

from metering import budgets as rules
from metering.access import INGEST, KEY, UNASSIGNED, Principal
from metering.budgets import Budget, Status
from metering.errors import BadRequest, Forbidden
from metering.services.context import Context
from metering.services.statuscache import StatusCache
from metering.store import budgets as table
from metering.store import spend
from metering.store.budgets import RollupState
from metering.timewindows import floor_slot


def create(ctx: Context, *, body: Any) -> dict[str, Any]:
    """A new budget; a webhook secret generated here is in the answer, once."""
    values = rules.parse_budget(body, allow_link_local=ctx.settings.webhook_allow_link_local)
    now = ctx.now()
    since = track_from(values["period"], values["tz"], now)
    def insert(con: Any) -> Budget:
        budget = table.insert(con, values, now=now, track_from=since)
        ctx.store.touch("budgets")  # on the writer, in the transaction: the next group counts for it
        return budget

    budget = ctx.store.writer.call(insert)
    ctx.store.touch("budgets")  # and after the commit, for the caches of readers (Context.active_budgets)
    out = budget.as_json()
    if "webhook_secret" not in body and budget.webhook_secret:
        out["webhook_secret"] = budget.webhook_secret  # generated: shown once, keep it to verify signatures
    return out


def track_from(period: str, tz: str, now: datetime) -> datetime:
    """Where a new budget's spend counters start: the period under way and the forecast's history."""
    start, _ = rules.period_bounds(period, tz, now)
    history = rules.utc_hour(now) - timedelta(days=rules.PROFILE_DAYS + 1)
    return floor_slot(min(start, history))


def track_untracked(ctx: Context) -> None:
    """Fill the counters of budgets made before counters existed (at start)."""
    with ctx.store.reading() as cur:
        missing = [table.get(cur, bid) for bid in table.untracked(cur)]
    for budget in missing:
        since = track_from(budget.period, budget.tz, ctx.now())
        ctx.store.writer.call(lambda con, b=budget, t=since: spend.track(con, budget_id=b.id, since=t))


def delete(ctx: Context, *, budget_id: str) -> None:
    def delete_(con: Any) -> None:
        table.delete(con, budget_id, now=ctx.now())
        ctx.store.touch("budgets")

    ctx.store.writer.call(delete_)
    ctx.store.touch("budgets")  # after the commit too (see create)


# --- who sees what -----------------------------------------------------------------------------------------


def _account(ctx: Context, api_key_id: str) -> str:
    key = ctx.store.key(api_key_id)
    return key.account_id if key else UNASSIGNED


def covering(cur: duckdb.DuckDBPyConnection, all_budgets: list[Budget], *, api_key_id: str, account_id: str,
             now: datetime) -> list[Budget]:
    """The budgets that cover a key: its own, its account's, everything, and those over a tag the key
    sent usage under in the budget's current period."""
    out = []
    for budget in all_budgets:
        if budget.scope.covers(api_key_id=api_key_id, account_id=account_id):
            out.append(budget)
        elif budget.scope.kind == "tag":
            start, end = rules.period_bounds(budget.period, budget.tz, now)
            if table.key_has_tag(cur, api_key_id=api_key_id, name=budget.scope.tag_name or "",
                                 value=budget.scope.value or "", start=start, end=end):
                out.append(budget)
    return out


def view_of(principal: Principal, budget: Budget) -> str:
    """How much of a budget a principal sees: `admin`, `owner` (a key's own budget) or `covering`."""
    if principal.role != KEY:
        return "admin"
    assert principal.key is not None
    return "owner" if budget.scope.is_key(principal.key.api_key_id) else "covering"


def _visible(ctx: Context, cur: duckdb.DuckDBPyConnection, principal: Principal, budgets_: list[Budget]) -> list[Budget]:
    if principal.role != KEY:
        return budgets_
    assert principal.key is not None
    return covering(cur, budgets_, api_key_id=principal.key.api_key_id, account_id=principal.key.account_id,
                    now=ctx.now())


def list_budgets(ctx: Context, *, principal: Principal) -> list[dict[str, Any]]:
    with ctx.store.reading() as cur:
        visible = _visible(ctx, cur, principal, table.active(cur))
    return [b.as_json(view=view_of(principal, b)) for b in visible]


def _get_visible(ctx: Context, cur: duckdb.DuckDBPyConnection, principal: Principal, budget_id: str) -> Budget:
    budget = table.get(cur, budget_id)
    if not _visible(ctx, cur, principal, [budget]):
        raise Forbidden("a key may read only the budgets that cover it")
    return budget


def get_budget(ctx: Context, *, budget_id: str, principal: Principal) -> dict[str, Any]:
    with ctx.store.reading() as cur:
        budget = _get_visible(ctx, cur, principal, budget_id)
    return budget.as_json(view=view_of(principal, budget))


def budget_status(ctx: Context, *, budget_id: str, principal: Principal) -> dict[str, Any]:
    with ctx.store.reading() as cur:
        budget = _get_visible(ctx, cur, principal, budget_id)
        view = view_of(principal, budget)
        key_id = principal.key.api_key_id if principal.key is not None else None  # a key's own share
        st = status(cur, budget, now=ctx.now(), cache=ctx.status_cache, with_projection=view != "covering",
                    key=key_id, held=ctx.admission.held(budget.id, budget.basis))
    return st.as_json(view=view)


def key_status(ctx: Context, *, api_key_id: str | None, principal: Principal) -> dict[str, Any]:
    """Every budget covering a key, with its status: what a gateway asks before serving a request.
    Admin and the gateway name the key; a key is always itself."""
    if api_key_id is None and principal.role != KEY:
        raise BadRequest("api_key_id: is required")
    key_id = principal.visible_key(api_key_id)
    assert key_id is not None
    account = _account(ctx, key_id)
    now = ctx.now()
    version = ctx.store.version("budgets")  # before the read snapshot begins (see Context.active_budgets)
    with ctx.store.reading() as cur:
        budgets_ = covering(cur, ctx.active_budgets(version, lambda: table.active(cur)), api_key_id=key_id,
                            account_id=account, now=now)
        # The key's own share of wider budgets: for the key and for admin; the gateway's check (the hot
        # path before every call) does without it.
        share = key_id if principal.role != INGEST else None
        state = RollupState.read(cur) if budgets_ and share is not None else None
        views = [view_of(principal, budget) for budget in budgets_]
        asked = [(budget, view != "covering", ctx.admission.held(budget.id, budget.basis))
                 for budget, view in zip(budgets_, views, strict=True)]
        found = statuses(cur, asked, now=now, cache=ctx.status_cache, state=state, key=share)
        out = [st.as_json(view=view) for st, view in zip(found, views, strict=True)]
    return {"api_key_id": key_id, "account_id": account, "budgets": out,
            "exceeded": any(s["exceeded"] for s in out)}


# --- spend and status ---------------------------------------------------------------------------------


def _hourly(cur: duckdb.DuckDBPyConnection, budget: Budget, *, period_start: datetime, lo: datetime, end: datetime,
            cache: StatusCache | None, state: RollupState | None) -> dict[datetime, tuple[int, int]]:
    """Per UTC hour: (spend inside the period, all spend). The rolled-up part from the cache when its
    state has not moved, plus the unrolled tail; tag scopes from the ledger."""
    if cache is None or budget.scope.kind == "tag":
        return table.hourly(cur, budget, period_start=period_start, lo=lo, end=end)
    state = state or RollupState.read(cur)
    keys = len(state.accounts) if budget.scope.kind == "account" else 0
    cache_key = (budget.id, budget.basis, budget.scope, period_start, lo, end)
    version = (state.watermark, state.generation, keys)
    rolled = cache.get(cache_key, version)
    if rolled is None:
        rolled = table.hourly(cur, budget, period_start=period_start, lo=lo, end=end, rolled_only=True)
        cache.put(cache_key, version, rolled)
    tail = state.tail_hourly(budget, period_start=period_start, lo=lo, end=end)
    if not tail:
        return rolled
    merged = dict(rolled)
    for hour, (inside, total) in tail.items():
        before = merged.get(hour, (0, 0))
        merged[hour] = (before[0] + inside, before[1] + total)
    return merged


def _spent(cur: duckdb.DuckDBPyConnection, budget: Budget, start: datetime, end: datetime,
           cache: StatusCache | None, state: RollupState | None) -> int:
    hourly = _hourly(cur, budget, period_start=start, lo=start, end=end, cache=cache, state=state)
    return sum(inside for inside, _ in hourly.values())


def status(cur: duckdb.DuckDBPyConnection, budget: Budget, *, now: datetime, with_projection: bool = True,
           cache: StatusCache | None = None, state: RollupState | None = None, key: str | None = None,
           held: int = 0) -> Status:
    """One budget's status: see `statuses`."""
    return statuses(cur, [(budget, with_projection, held)], now=now, cache=cache, state=state, key=key)[0]


def statuses(cur: duckdb.DuckDBPyConnection, asked: list[tuple[Budget, bool, int]], *, now: datetime,
             cache: StatusCache | None = None, state: RollupState | None = None, key: str | None = None) -> list[Status]:
    """Budgets' spend in their current periods and, for those asked with the projection, the forecast
    at the end; `asked`: (budget, with the projection, held). Read from the budgets' own spend counters
    (store.spend: per 15-minute slot, exact at every commit) in one query: the period's spend, and the
    last PROFILE_DAYS days per hour for a projection. With `key`, that key's share of the spend too
    (from the rollup)."""
    bounds = [rules.period_bounds(budget.period, budget.tz, now) for budget, _, _ in asked]
    # The forecast's profile reads whole UTC days back to midnight of the day PROFILE_DAYS before this hour.
    history_start = (rules.utc_hour(now) - timedelta(days=rules.PROFILE_DAYS)).replace(hour=0)
    counters = spend.windows(cur, [(budget.id, budget.basis, start, history_start if projecting else end, end)
                                   for (budget, projecting, _), (start, end) in zip(asked, bounds, strict=True)])
    out = []
    for (budget, projecting, held), (start, end) in zip(asked, bounds, strict=True):
        spent, hourly = counters[budget.id]
        projected = spent
        if projecting:
            projected = rules.project(spent=spent, now=now, period_start=start, period_end=end, hourly=hourly)
        key_spent = None
        if key is not None:
            key_spent = spent if budget.scope.is_key(key) else _spent(cur, budget.share_of(key), start, end, cache, state)
        out.append(Status(budget, start, end, spent, projected, held=held, key_spent=key_spent))
    return out
