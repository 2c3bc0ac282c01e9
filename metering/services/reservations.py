"""Budget reservations: admission before the call, so concurrent calls never overspend an enforced
budget (CONTRACT.md "Budget reservations").

`reserve` holds the most a call can cost against every enforced budget covering the key, or denies
and holds nothing, naming the budget that would be exceeded; the usage record with the same
request_id settles the hold (the store does it in the record's own transaction); `release` gives a
hold back (the call failed); a hold past its ttl counts no more and is marked expired. Retrying a
reservation with the same request_id answers the same decision for the same call.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from metering import budgets as rules
from metering import reservations as reservation_rules
from metering.access import UNASSIGNED
from metering.errors import Conflict, NotFound
from metering.pricing import usd_string
from metering.reservations import Ask, Hold, Room
from metering.services.context import Context
from metering.store import budgets as budget_table
from metering.store import reservations as table
from metering.store import spend


def _iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def _windows(budgets_: list[rules.Budget], now: datetime) -> list[tuple[str, str, datetime, datetime]]:
    return [(b.id, b.basis, *rules.period_bounds(b.period, b.tz, now)) for b in budgets_]


def _rooms(ctx: Context, cur: Any, budgets_: list[rules.Budget], now: datetime) -> list[Room]:
    """Each enforced budget's spend in its period and what is held against it. Under the admission lock:
    holds first, then spend (see admission.py)."""
    held = {b.id: ctx.admission.held(b.id, b.basis) for b in budgets_}
    spent = spend.spent_in(cur, _windows(budgets_, now)) if budgets_ else {}
    return [Room(b, spent.get(b.id, 0), held[b.id]) for b in budgets_]


def _budgets_json(rooms: list[Room], hold: Hold | None) -> list[dict[str, Any]]:
    out = []
    for room in rooms:
        b = room.budget
        out.append({"id": b.id, "scope": b.scope.as_json(), "basis": b.basis, "amount": usd_string(b.amount_pico),
                    "spent": usd_string(room.spent), "held": usd_string(room.held),
                    "remaining": usd_string(max(b.amount_pico - room.spent - room.held, 0)),
                    **({"this_hold": usd_string(hold.on(b.basis))} if hold is not None else {})})
    return out


def reserve(ctx: Context, *, body: Any) -> dict[str, Any]:
    ask = reservation_rules.parse_ask(body)
    now = ctx.now()
    admission = ctx.admission
    version = ctx.store.card.version_at(ask.model, now)
    key = ctx.store.key(ask.api_key_id)
    account = key.account_id if key else UNASSIGNED
    budgets_version = ctx.store.version("budgets")  # before the read snapshot begins
    with ctx.store.reading() as cur:
        enforced = [b for b in admission.enforced(budgets_version, lambda: budget_table.active(cur))
                    if reservation_rules.covers(b, api_key_id=ask.api_key_id, account_id=account, tags=ask.tags)]
        with admission.deciding():  # one decision at a time; what it reads is one snapshot
            row, stored = table.lookup(cur, ask.request_id)
            if row is not None or admission.holding(ask.request_id) is not None:
                return _retried(ctx, cur, ask, row, now)
            if stored:
                raise Conflict(f"request_id {ask.request_id!r}: conflict: its usage record is already stored")
            if version is None:
                return {"decision": "deny", "request_id": ask.request_id, "held": "0", "budgets": [], "denied_by": [],
                        "reason": f"model {ask.model!r} has no price in the rate card: the most this call can cost "
                                  "is unknown"}
            hold = reservation_rules.hold_for(ask, version, now=now)
            rooms = _rooms(ctx, cur, enforced, now)
            short = [r for r in rooms if not r.admits(hold.on(r.budget.basis))]
            if short:
                names = ", ".join(f"{r.budget.id} ({_scope_text(r.budget)})" for r in short)
                return {"decision": "deny", "request_id": ask.request_id, "held": "0",
                        "hold_needed": usd_string(hold.cost), "budgets": _budgets_json(rooms, hold),
                        "denied_by": [r.budget.id for r in short],
                        "reason": f"this call may cost up to {usd_string(hold.cost)} USD, more than is left in {names}"}
            row = table.Row(ask.request_id, ask.api_key_id, ask.model, ask.max_input_tokens, ask.max_output_tokens,
                            ask.tags, hold.cost, hold.list_cost, version.id or 0, tuple(b.id for b in enforced),
                            "held", now, reservation_rules.expires_at(now, ask.ttl_seconds), None)
            admission.add(row)
    try:  # durable before the answer; beside the writer, so it never waits behind a group of ingest
        ctx.store.commit_apart(lambda con: table.insert(con, row))
    except Exception:
        admission.drop([ask.request_id])
        raise
    return _allowed(row, [Room(r.budget, r.spent, r.held + hold.on(r.budget.basis)) for r in rooms])


def _allowed(row: table.Row, rooms: list[Room]) -> dict[str, Any]:
    return {"decision": "allow", "request_id": row.request_id, "held": usd_string(row.hold_pico),
            "list_held": usd_string(row.list_hold_pico), "expires_at": _iso(row.expires_at),
            "status": row.status, "budgets": _budgets_json(rooms, None)}


def _scope_text(budget: rules.Budget) -> str:
    return ", ".join(f"{k} {v}" for k, v in budget.scope.as_json().items())


def _retried(ctx: Context, cur: Any, ask: Ask, row: table.Row | None, now: datetime) -> dict[str, Any]:
    """A reservation already made with this request_id: the same call gets the same answer (one still
    being written answers from memory)."""
    row = row or ctx.admission.holding(ask.request_id)
    assert row is not None
    previous = Ask(row.request_id, row.api_key_id, row.model, row.max_input_tokens, row.max_output_tokens,
                   ask.ttl_seconds, row.tags)
    if not previous.same_call(ask):
        raise Conflict(f"request_id {ask.request_id!r}: conflict: a reservation with different terms exists")
    budgets_ = {b.id: b for b in budget_table.active(cur)}
    return _allowed(row, _rooms(ctx, cur, [budgets_[bid] for bid in row.budget_ids if bid in budgets_], now))


def release(ctx: Context, *, request_id: str) -> dict[str, Any]:
    """Give a hold back (the call failed). Idempotent: a hold already settled, released or expired
    answers its status."""
    with ctx.store.reading() as cur:
        row = table.get(cur, request_id)
    if row is None:
        raise NotFound(f"no reservation with request_id {request_id[:200]!r}")
    moved = ctx.store.writer.call(lambda con: table.close(con, [request_id], status="released", now=ctx.now()))
    ctx.store.touch("reservations")
    ctx.admission.drop(moved)
    with ctx.store.reading() as cur:
        row = table.get(cur, request_id)
    assert row is not None
    return {"request_id": request_id, "status": row.status, "held": usd_string(row.hold_pico)}


def get(ctx: Context, *, request_id: str) -> dict[str, Any]:
    with ctx.store.reading() as cur:
        row = table.get(cur, request_id)
    if row is None:
        raise NotFound(f"no reservation with request_id {request_id[:200]!r}")
    status = "expired" if row.status == "held" and row.expires_at <= ctx.now() else row.status
    return {"request_id": row.request_id, "api_key_id": row.api_key_id, "model": row.model, "status": status,
            "held": usd_string(row.hold_pico), "list_held": usd_string(row.list_hold_pico),
            "budget_ids": list(row.budget_ids), "created_at": _iso(row.created_at),
            "expires_at": _iso(row.expires_at), "closed_at": _iso(row.closed_at) if row.closed_at else None}


def expire(ctx: Context) -> list[str]:
    """Mark holds past their ttl expired (they already count no more)."""
    due = ctx.admission.expired()
    if not due:
        return []
    moved = ctx.store.writer.call(lambda con: table.close(con, due, status="expired", now=ctx.now()))
    ctx.store.touch("reservations")
    return moved
