"""Period close: a billing month's statements and FOCUS rows, stored by one transaction and never
recomputed; the list of closed months; the scheduled close; the guard that keeps re-rating out of
closed months.

Rules (README "Period close"):
- A month can be closed once it has ended in the billing time zone. Months close in order: the first
  close is of the first month with usage (or any ended month if there is no earlier usage), then each
  next month. Closing a closed month again changes nothing and answers `closed_now: false`.
- Late usage of a closed month (or of a month before the first closed one) is stored as usual and
  billed on the first open month as corrections.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import polars as pl

from metering.errors import Conflict, PeriodClosed, PeriodOrder
from metering.ratecard import format_decimal
from metering.services import focus
from metering.services.billing import close_statements
from metering.services.calendar import EARLIEST, Calendar, State, iso, month_date, month_key
from metering.services.context import Context
from metering.services.lines import ROUNDING_RULE
from metering.services.sources import CursorSource
from metering.store import periods as stored
from metering.timewindows import parse_month

log = logging.getLogger("metering.periods")
CLOSED_BY = ("api", "cli", "schedule")
LATEST = datetime(2100, 1, 2, tzinfo=UTC)
MAX_CATCH_UP = 1_300  # months one scheduled round may close (2000-01 to 2100-01 at most)


def period_json(p: dict[str, Any]) -> dict[str, Any]:
    out = dict(p)
    for name in ("period_start", "period_end", "closed_at"):
        out[name] = iso(p[name])
    for name in ("amount", "list_amount", "correction_amount"):
        out[name] = format_decimal(p[name])
    return out


def _naive(frame: pl.DataFrame) -> pl.DataFrame:
    """UTC datetimes -> naive UTC (what TIMESTAMP columns hold, whatever DuckDB's session zone)."""
    return frame.with_columns(pl.col(c).dt.replace_time_zone(None) for c, t in frame.schema.items()
                              if isinstance(t, pl.Datetime) and t.time_zone is not None)


def _next_month(src: Any, state: State, cal: Calendar) -> str | None:
    """The month a close may take next: after the last closed one, else the first month with usage."""
    if state.closed:
        return state.first_open
    first = src.first_usage(after=EARLIEST, before=LATEST)
    return month_key(cal.month_of(first)) if first is not None else None


def close(ctx: Context, *, month: str, by: str = "api") -> dict[str, Any]:
    """Close a month in one transaction on the writer thread (ingest waits meanwhile): compute every
    account's statement and the month's FOCUS rows from the ledger as it is, and store them."""
    first = parse_month(month)
    key = month_key(first)
    names = {k.api_key_id: k.name for k in ctx.store.list_keys()}

    def run(con: Any) -> dict[str, Any]:
        src = CursorSource(con, ctx.store.card, billing_tz=ctx.settings.billing_tz, key_names=names)
        state = State.read(src)
        if key in state.closed:
            return {"month": key, "closed_now": False, "period": period_json(state.closed[key])}
        if state.tz != state.setting_tz:
            raise Conflict(f"months were closed in {state.tz}, but METERING_BILLING_TZ is {state.setting_tz}; set it "
                           f"back to {state.tz}: a billing time zone cannot change once a month is closed")
        cal = Calendar(state.tz)
        start, end = cal.bounds(first)
        now = ctx.now()
        if end > now:
            raise PeriodOrder(f"month: {key} has not ended (it ends at {iso(end)}, {state.tz}); only a month before "
                              "the current one can be closed")
        if state.closed:
            if state.billed_elsewhere(key):
                raise PeriodOrder(f"month: {key} is before {state.first_closed}, the first closed month; its usage is "
                                  f"billed as corrections on the first open month ({state.first_open})")
            if key != state.first_open:
                raise PeriodOrder(f"month: months close in order; close {state.first_open} first")
        else:
            earlier = src.first_usage(after=EARLIEST, before=start)
            if earlier is not None:
                m = month_key(cal.month_of(earlier))
                raise PeriodOrder(f"month: {m} has usage and is not closed; months close in order, from the first "
                                  f"month with usage: close {m} first")
        headers, lines = close_statements(src, state, cal, first)
        rows = focus.ordered_lines(focus.month_lines(src, state, cal, first))
        rows = rows.with_columns(pl.lit(key).alias("month"), pl.int_range(1, rows.height + 1, dtype=pl.Int32)
                                 .alias("row_no"))
        zero = Decimal(0)
        period_row = {
            "month": key, "tz": state.tz, "period_start": start, "period_end": end, "closed_at": now, "closed_by": by,
            "ledger_seq": stored.last_seq(con), "rounding": ROUNDING_RULE, "accounts": headers.height,
            "statement_lines": lines.height, "focus_rows": rows.height,
            "requests": int(headers["requests"].sum() or 0),
            "unpriced_requests": int(headers["unpriced_requests"].sum() or 0),
            "amount": headers["amount"].sum() if headers.height else zero,
            "list_amount": headers["list_amount"].sum() if headers.height else zero,
            "correction_amount": headers["correction_amount"].sum() if headers.height else zero,
        }
        stored.insert_close(con, period_row=period_row, statements=headers.to_arrow(),
                            lines=lines.to_arrow(), focus=_naive(rows).to_arrow())
        return {"month": key, "closed_now": True, "period": period_json(period_row)}

    if by not in CLOSED_BY:
        raise ValueError(f"closed_by must be one of {CLOSED_BY}")
    return ctx.store.writer.call(run)


def list_periods(ctx: Context) -> dict[str, Any]:
    with ctx.store.reading() as cur:
        src = CursorSource(cur, ctx.store.card, billing_tz=ctx.settings.billing_tz)
        state = State.read(src)
        cal = Calendar(state.tz)
        upcoming = _next_month(src, state, cal)
    nxt = None
    if upcoming is not None:
        end = cal.bounds(month_date(upcoming))[1]
        due = end + timedelta(days=ctx.settings.auto_close_days) if ctx.settings.auto_close_days is not None else None
        nxt = {"month": upcoming, "ends_at": iso(end), "closable": end <= ctx.now(),
               "auto_close_at": iso(due) if due else None}
    return {"billing_tz": state.tz, "auto_close_days": ctx.settings.auto_close_days,
            "first_open_month": state.first_open, "next_to_close": nxt,
            "data": [period_json(state.closed[m]) for m in sorted(state.closed)]}


def close_due(ctx: Context) -> list[str]:
    """Close every month due by the schedule (ended METERING_AUTO_CLOSE_DAYS ago or more), in order."""
    days = ctx.settings.auto_close_days
    if days is None:
        return []
    closed: list[str] = []
    for _ in range(MAX_CATCH_UP):
        with ctx.store.reading() as cur:
            src = CursorSource(cur, ctx.store.card, billing_tz=ctx.settings.billing_tz)
            state = State.read(src)
            cal = Calendar(state.tz)
            upcoming = _next_month(src, state, cal)
        if upcoming is None or cal.bounds(month_date(upcoming))[1] + timedelta(days=days) > ctx.now():
            break
        if not close(ctx, month=upcoming, by="schedule")["closed_now"]:
            break
        closed.append(upcoming)
        log.info("closed billing month %s (scheduled)", upcoming)
    return closed


def check_reprice(cur: Any, ctx: Context, *, start: datetime, end: datetime) -> None:
    """Re-rating may touch open months only: a range reaching before the first open month is a 409."""
    state = State.of(stored.periods(cur), ctx.settings.billing_tz)
    if not state.closed or state.first_open is None:
        return
    cal = Calendar(state.tz)
    open_start = cal.bounds(month_date(state.first_open))[0]
    if start >= open_start:
        return
    month = month_key(cal.month_of(start))
    where = (f"{month} is closed" if month in state.closed else
             f"{month} is before {state.first_closed}, the first closed month (its usage is billed as corrections)")
    raise PeriodClosed(f"start: {where}, and a closed month's figures never change; re-rate from {iso(open_start)} "
                       f"({state.first_open}, the first open month) on")


class PeriodCloser:
    """The scheduled close: a thread that closes what is due, at start and then every `interval` s."""

    def __init__(self, ctx: Context, *, interval: float) -> None:
        self._ctx = ctx
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> PeriodCloser:
        self._thread = threading.Thread(target=self._run, name="metering-periods", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=60)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                close_due(self._ctx)
            except Exception:
                log.exception("scheduled period close failed")
            self._stop.wait(self._interval)
