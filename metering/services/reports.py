"""Finance documents, built with Polars over Arrow from a Source (this node's ledger, or the lake):
the daily cost report, the monthly statement per account, and the FOCUS 1.2 cost and usage export.

Money stays exact: DECIMAL(38, 12) USD from DuckDB, Polars Decimal columns, Python Decimal.
Only the statement rounds, to cents, by the rule it prints (`ROUNDING_RULE`).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import polars as pl

from metering.services import billing, focus
from metering.services.documents import MONEY, Document
from metering.services.lines import ROUNDING_RULE, round_lines
from metering.services.sources import LedgerSource, Source
from metering.store import queries
from metering.timewindows import cut, local_midnight, parse_date, zone

__all__ = ["ROUNDING_RULE", "LedgerSource", "Source", "daily_report", "focus_export", "round_lines", "statement"]
DEFAULT_DAILY_GROUP = "account_id,api_key_id,model"
DAILY_FORMATS = ("json", "csv", "parquet", "xlsx")
STATEMENT_FORMATS = ("json", "csv", "xlsx")
FOCUS_FORMATS = ("csv", "parquet")


# --- the daily report ---------------------------------------------------------------------------------


def daily_report(source: Source, *, now: datetime, start: str | date | None = None, end: str | date | None = None,
                 tz: str = "UTC", group_by: str | None = None) -> Document:
    """One row per local day and group, then a totals row (`row_type` = "total"). Without start
    or end: the last 30 local days, today included."""
    zone_info = zone(tz)
    default_start, default_end = default_window(now, tz)
    start_d, end_d = parse_date(start or default_start, "start"), parse_date(end or default_end, "end")
    buckets = cut(local_midnight(start_d, zone_info), local_midnight(end_d, zone_info), "day", zone_info)
    groups = queries.GroupBy.parse(group_by or DEFAULT_DAILY_GROUP)
    arrow = source.usage_arrow(buckets=buckets, group_by=groups)
    days = pl.DataFrame({"bucket": list(range(len(buckets))),
                         "date": [b[0].astimezone(zone_info).date() for b in buckets]},
                        schema={"bucket": pl.Int32, "date": pl.Date})
    frame = pl.from_arrow(arrow).join(days, on="bucket", how="left").drop("bucket")
    fields = list(groups.fields)
    counts = [c for c in queries.COUNT_FIELDS if c != "unpriced_requests"]
    body = frame.select("date", *fields, *counts, "cost", "list_cost", "unpriced_requests")
    totals = body.select(
        pl.lit(None, pl.Date).alias("date"),
        *[pl.lit(None, pl.String).alias(f) for f in fields],
        *[pl.col(c).sum() for c in counts],
        pl.col("cost").sum().cast(MONEY), pl.col("list_cost").sum().cast(MONEY),
        pl.col("unpriced_requests").sum(),
    )
    body = body.with_columns(pl.lit("day").alias("row_type"))
    totals = totals.with_columns(pl.lit("total").alias("row_type"))
    out = pl.concat([body.with_columns(pl.col(f).cast(pl.String) for f in fields), totals], how="vertical_relaxed")
    out = out.with_columns(
        (pl.col("input_tokens") - pl.col("cached_tokens") - pl.col("cache_write_tokens")).alias("uncached_input_tokens"),
        (pl.col("list_cost") - pl.col("cost")).cast(MONEY).alias("savings"),
    ).with_columns(
        _share(pl.col("savings"), pl.col("list_cost")).alias("savings_share"),
        _share(pl.col("cached_tokens"), pl.col("input_tokens")).alias("cache_hit_rate"),
        _share(pl.col("thinking_tokens"), pl.col("output_tokens")).alias("thinking_share"),
    ).select(
        "date", *fields, "requests", "input_tokens", "cached_tokens", "cache_write_tokens", "uncached_input_tokens",
        "output_tokens", "thinking_tokens", "web_search_requests", "cost", "list_cost", "savings", "savings_share",
        "cache_hit_rate", "thinking_share", "unpriced_requests", "row_type",
    ).with_columns(unpriced_as_null("cost", "list_cost", "savings", "savings_share"))
    meta = {"report": "daily", "currency": "USD", "tz": tz, "start": start_d.isoformat(), "end": end_d.isoformat(),
            "group_by": fields}
    return Document(out, meta)


def _share(numerator: pl.Expr, denominator: pl.Expr) -> pl.Expr:
    """A ratio (not money, so a float is fine), null where the denominator is zero."""
    den = denominator.cast(pl.Float64)
    return pl.when(den > 0).then((numerator.cast(pl.Float64) / den).round(6)).otherwise(None)


def unpriced_as_null(*columns: str) -> list[pl.Expr]:
    """Money of a row whose every request is unpriced is unknown, not zero: null (empty in CSV/XLSX).
    A row with some priced requests shows their cost, and `unpriced_requests` says how many are not in it."""
    unknown = (pl.col("requests") > 0) & (pl.col("unpriced_requests") == pl.col("requests"))
    return [pl.when(unknown).then(None).otherwise(pl.col(c)).alias(c) for c in columns]


# --- the monthly statement and FOCUS: billing documents (metering.services.billing) --------------------


def statement(source: Source, *, account: str, month: str, tz: str | None = None) -> Document:
    """An account's statement for a billing month: stored if the month is closed, else from the ledger
    (with the corrections of closed months on the first open month)."""
    return billing.statement(source, account=account, month=month, tz=tz)


def focus_export(source: Source, *, start: str | date, end: str | date) -> Document:
    """FOCUS 1.2 rows of [start, end) (dates of the billing time zone)."""
    return focus.focus_export(source, start=start, end=end)


def default_window(now: datetime, tz: str) -> tuple[date, date]:
    today = now.astimezone(zone(tz)).date()
    return today - timedelta(days=29), today + timedelta(days=1)
