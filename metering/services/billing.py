"""Billing documents: the monthly statement of an account and the figures a period close stores.

A month's statement bills the usage that occurred in it. Once months are closed, the first open month
also bills corrections: for every earlier usage month, what the ledger holds now minus what closed
months billed for it (per account x key x model x rate version x token class). So closed months plus
corrections add up to everything that happened, to the pico-dollar, and a closed month's figures never
move: they are stored by the close and rendered from the store.
"""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from typing import Any

import polars as pl

from metering.services.calendar import EARLIEST, Calendar, State, iso, month_date, month_key
from metering.services.documents import MONEY, Document
from metering.services.lines import CLASS_LABELS, ROUNDING_RULE, class_lines, price_frame, round_lines
from metering.services.sources import snapshot
from metering.timewindows import parse_month, zone
from metering.tokenclasses import BY_NAME, CLASS_NAMES

CENTS = pl.Decimal(38, 2)
LINE_KEYS = ["usage_month", "account_id", "api_key_id", "model", "rate_version_id", "token_class"]
LINE_FIELDS = ["account_id", "line_type", *LINE_KEYS[:1], *LINE_KEYS[2:], "quantity", "price", "list_price",
               "amount", "list_amount"]
AMOUNTS = ["quantity", "amount", "list_amount"]
STATEMENT_COLUMNS = ["api_key_id", "model", "rate_version_id", "token_class", "description", "quantity",
                     "consumed_unit", "price", "list_price", "pricing_unit", "amount", "amount_rounded", "list_amount",
                     "list_amount_rounded", "line_type", "usage_month"]
STATUS_NOTES = {
    "open": "open: the figures may still change; the month is billed as it is when it is closed",
    "closed": "closed: final; late usage for this month is billed as a correction on the first open month",
    "before_billing": "before the first closed month: nothing is billed for it on its own; usage found here is "
                      "billed as a correction on the first open month",
    "usage_view": "not a billing document: the usage that occurred in this month of a zone other than the "
                  "billing time zone, without corrections",
}
_CLASS_ORDER = {c: i for i, c in enumerate(CLASS_NAMES)}
_LINE_SCHEMA = {"account_id": pl.String, "line_type": pl.String, "usage_month": pl.String, "api_key_id": pl.String,
                "model": pl.String, "rate_version_id": pl.Int32, "token_class": pl.String, "quantity": pl.Int64,
                "price": MONEY, "list_price": MONEY, "amount": MONEY, "list_amount": MONEY}


def empty_lines() -> pl.DataFrame:
    return pl.DataFrame(schema=_LINE_SCHEMA)


# --- lines from the ledger ---------------------------------------------------------------------------

_SUMMED = (*CLASS_NAMES, "requests", "cost_pico", "list_cost_pico")


def canonical_tags(quantities: pl.DataFrame) -> pl.DataFrame:
    """The ledger's tag maps -> canonical JSON text (keys sorted, built by the JSON encoder), and the
    groups that differed only in the order of their tags summed into one."""
    cache: dict[tuple, str] = {}
    texts = []
    for value in quantities["tags"].to_list():
        items = tuple(sorted(value.items())) if value else ()
        text = cache.get(items)
        if text is None:
            text = cache[items] = json.dumps(dict(items), ensure_ascii=False, separators=(",", ":"), sort_keys=True)
        texts.append(text)
    frame = quantities.with_columns(pl.Series("tags", texts, dtype=pl.String))
    keys = [c for c in frame.columns if c not in _SUMMED]
    return frame.group_by(keys, maintain_order=True).agg(pl.col(c).sum() for c in _SUMMED if c in frame.columns)



def usage_lines(src: Any, cal: Calendar, first: date, account: str | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The usage lines of a month (one account, or every account), and requests per account."""
    key = month_key(first)
    quantities = pl.from_arrow(src.class_quantities_arrow(buckets=[cal.bounds(first)], account_id=account))
    counts = quantities.group_by("account_id").agg(
        pl.col("requests").sum().cast(pl.Int64),
        pl.col("requests").filter(pl.col("rate_version_id").is_null()).sum().cast(pl.Int64).alias("unpriced_requests"))
    lines = class_lines(quantities.drop("bucket", "key_name"), src.card).with_columns(
        pl.lit("usage").alias("line_type"), pl.lit(key).alias("usage_month"))
    return lines.select(LINE_FIELDS).cast(_LINE_SCHEMA), counts  # type: ignore[arg-type]


def ledger_before(src: Any, cal: Calendar, open_first: date, *, account: str | None = None,
                  tags: bool = False) -> pl.DataFrame:
    """What the ledger holds for every usage month before `open_first`: quantity and amounts per
    usage month x account x key x model x rate version x class (x tag set)."""
    before = cal.bounds(open_first)[0]
    first = src.first_usage(after=EARLIEST, before=before)
    if first is None:
        return None  # type: ignore[return-value]
    months = cal.months(cal.month_of(first), open_first)
    quantities = pl.from_arrow(src.class_quantities_arrow(buckets=[cal.bounds(m) for m in months], account_id=account,
                                                          tags=tags))
    names = pl.DataFrame({"bucket": list(range(len(months))), "usage_month": [month_key(m) for m in months]},
                         schema={"bucket": pl.Int32, "usage_month": pl.String})
    quantities = quantities.join(names, on="bucket").drop("bucket", "key_name")
    if tags:
        quantities = canonical_tags(quantities)
    keys = [*LINE_KEYS[:-1], *(["tags"] if tags else [])]
    return class_lines(quantities, src.card).select(*keys, "token_class", *AMOUNTS)


def corrections(ledger: pl.DataFrame | None, billed: pl.DataFrame, keys: list[str], card: Any) -> pl.DataFrame:
    """ledger - billed per key, the rows where anything differs, with the version's unit prices."""
    billed = billed.select(*keys, *AMOUNTS).cast({"rate_version_id": pl.Int32, "quantity": pl.Int64,
                                                  "amount": MONEY, "list_amount": MONEY})
    if ledger is None:
        ledger = billed.clear()
    ledger = ledger.select(*keys, *AMOUNTS).cast({"rate_version_id": pl.Int32, "quantity": pl.Int64,
                                                  "amount": MONEY, "list_amount": MONEY})
    joined = ledger.join(billed, on=keys, how="full", coalesce=True, suffix="_billed")
    diff = joined.select(*keys, *[(pl.col(c).fill_null(0) - pl.col(f"{c}_billed").fill_null(0)).alias(c)
                                   for c in AMOUNTS])
    diff = diff.cast({"quantity": pl.Int64, "amount": MONEY, "list_amount": MONEY}).filter(
        (pl.col("quantity") != 0) | (pl.col("amount") != 0) | (pl.col("list_amount") != 0))
    prices = price_frame(card).select("rate_version_id", "token_class", "price", "list_price")
    return diff.join(prices, on=["rate_version_id", "token_class"], how="left")


def statement_corrections(src: Any, cal: Calendar, open_key: str, account: str | None = None) -> pl.DataFrame:
    """The correction lines billed on the first open month `open_key` (one account, or all)."""
    ledger = ledger_before(src, cal, month_date(open_key), account=account)
    billed = pl.from_arrow(src.billed_statement(before=open_key))
    if account is not None:
        billed = billed.filter(pl.col("account_id") == account)
    lines = corrections(ledger, billed, LINE_KEYS, src.card)
    return lines.with_columns(pl.lit("correction").alias("line_type")).select(LINE_FIELDS).cast(_LINE_SCHEMA)  # type: ignore[arg-type]


def month_lines(src: Any, state: State, cal: Calendar, first: date,
                account: str | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A month's lines as billed now: its usage, and on the first open month the corrections."""
    lines, counts = usage_lines(src, cal, first, account)
    if month_key(first) == state.first_open:
        lines = pl.concat([lines, statement_corrections(src, cal, state.first_open, account)])
    return lines, counts


# --- the statement document -----------------------------------------------------------------------------


def ordered(lines: pl.DataFrame) -> pl.DataFrame:
    """Statement order: usage lines, then corrections by usage month; each by key, model, price, class."""
    return lines.with_columns(
        (pl.col("line_type") == "correction").alias("_c"),
        pl.col("token_class").replace_strict(_CLASS_ORDER, return_dtype=pl.Int32).alias("_o"),
    ).sort("_c", "usage_month", "api_key_id", "model", "rate_version_id", "_o").drop("_c", "_o")


def rounded(lines: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, Decimal]]:
    """Lines (in statement order) with cents by the stated rule, and the totals."""
    exact = [Decimal(a) for a in lines["amount"].to_list()]
    exact_list = [Decimal(a) for a in lines["list_amount"].to_list()]
    cents, total = round_lines(exact)
    cents_list, total_list = round_lines(exact_list)
    corrections_only = lines.filter(pl.col("line_type") == "correction")["amount"]
    totals = {"amount": sum(exact, Decimal(0)), "amount_rounded": total, "list_amount": sum(exact_list, Decimal(0)),
              "list_amount_rounded": total_list, "savings_rounded": total_list - total,
              "correction_amount": sum((Decimal(a) for a in corrections_only.to_list()), Decimal(0))}
    return lines.with_columns(pl.Series("amount_rounded", cents, dtype=CENTS),
                              pl.Series("list_amount_rounded", cents_list, dtype=CENTS)), totals


def shaped(lines: pl.DataFrame) -> pl.DataFrame:
    """The statement's columns (new ones at the end: `line_type`, `usage_month`)."""
    return lines.with_columns(
        pl.col("token_class").replace_strict(CLASS_LABELS, return_dtype=pl.String).alias("description"),
        pl.col("token_class").replace_strict({c: t.consumed_unit for c, t in BY_NAME.items()},
                                             return_dtype=pl.String).alias("consumed_unit"),
        pl.col("token_class").replace_strict({c: t.pricing_unit for c, t in BY_NAME.items()},
                                             return_dtype=pl.String).alias("pricing_unit"),
    ).select(STATEMENT_COLUMNS).cast({"amount_rounded": CENTS, "list_amount_rounded": CENTS})


def statement(source: Any, *, account: str, month: str, tz: str | None = None) -> Document:
    """An account's statement for a month: stored if closed, else as it would be billed now. A `tz`
    other than the billing time zone gives a usage view (not a billing document)."""
    first = parse_month(month)
    if tz is not None:
        zone(tz)
    with snapshot(source) as src:
        state = State.read(src)
        tz = tz or state.tz
        cal = Calendar(tz)
        key = month_key(first)
        start, end = cal.bounds(first)
        meta: dict[str, Any] = {
            "document": "statement", "account_id": account, "month": key, "tz": tz, "period_start": iso(start),
            "period_end": iso(end), "currency": "USD", "rounding": ROUNDING_RULE, "billing_tz": state.tz,
        }
        if tz == state.tz and key in state.closed:
            return closed_statement(src, state.closed[key], account, meta)
        if tz != state.tz:
            status = "usage_view"
            lines, counts = usage_lines(src, cal, first, account)
        elif state.billed_elsewhere(key):
            status, lines, counts = "before_billing", empty_lines(), None
        else:
            status = "open"
            lines, counts = month_lines(src, state, cal, first, account)
    lines, totals = rounded(ordered(lines))
    requests = int(counts["requests"].sum() or 0) if counts is not None else 0
    unpriced = int(counts["unpriced_requests"].sum() or 0) if counts is not None else 0
    meta.update(status=status, status_note=STATUS_NOTES[status], closed_at=None, totals=totals, requests=requests,
                unpriced_requests=unpriced)
    return Document(shaped(lines), meta)


def closed_statement(src: Any, period: dict[str, Any], account: str, meta: dict[str, Any]) -> Document:
    """A closed month's statement, from the stored rows alone."""
    header, table = src.closed_statement(period["month"], account)
    lines = pl.from_arrow(table).cast({"price": MONEY, "list_price": MONEY, "amount": MONEY, "list_amount": MONEY,
                                       "rate_version_id": pl.Int32, "quantity": pl.Int64})
    zero = Decimal(0)
    h = header or {"requests": 0, "unpriced_requests": 0, "amount": zero, "amount_rounded": zero.quantize(Decimal("0.01")),
                   "list_amount": zero, "list_amount_rounded": zero.quantize(Decimal("0.01")), "correction_amount": zero}
    totals = {name: h[name] for name in ("amount", "amount_rounded", "list_amount", "list_amount_rounded")}
    totals.update(savings_rounded=h["list_amount_rounded"] - h["amount_rounded"], correction_amount=h["correction_amount"])
    meta.update(rounding=period["rounding"], status="closed", status_note=STATUS_NOTES["closed"],
                closed_at=iso(period["closed_at"]), totals=totals, requests=int(h["requests"]),
                unpriced_requests=int(h["unpriced_requests"]))
    return Document(shaped(lines), meta)


# --- what a close stores -------------------------------------------------------------------------------------


def close_statements(src: Any, state: State, cal: Calendar, first: date) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Every account's statement of the month being closed: (header rows, line rows)."""
    key = month_key(first)
    lines, counts = month_lines(src, state, cal, first)
    accounts = sorted(set(lines["account_id"].to_list()) | set(counts["account_id"].to_list()))
    headers, stored = [], []
    for account in accounts:
        mine, totals = rounded(ordered(lines.filter(pl.col("account_id") == account)))
        stored.append(mine.with_columns(pl.lit(key).alias("month"),
                                        pl.int_range(1, mine.height + 1, dtype=pl.Int32).alias("line_no")))
        used = counts.filter(pl.col("account_id") == account)
        headers.append({"month": key, "account_id": account, "requests": int(used["requests"].sum() or 0),
                        "unpriced_requests": int(used["unpriced_requests"].sum() or 0),
                        **{k: totals[k] for k in ("amount", "amount_rounded", "list_amount", "list_amount_rounded",
                                                  "correction_amount")}})
    header_schema = {"month": pl.String, "account_id": pl.String, "requests": pl.Int64, "unpriced_requests": pl.Int64,
                     "amount": MONEY, "amount_rounded": CENTS, "list_amount": MONEY, "list_amount_rounded": CENTS,
                     "correction_amount": MONEY}
    header_frame = pl.DataFrame(headers, schema=header_schema)
    line_frame = pl.concat(stored) if stored else empty_lines().with_columns(
        pl.lit(None, CENTS).alias("amount_rounded"), pl.lit(None, CENTS).alias("list_amount_rounded"),
        pl.lit(None, pl.String).alias("month"), pl.lit(None, pl.Int32).alias("line_no"))
    return header_frame, line_frame
