"""The FOCUS 1.2 cost and usage export.

Rows are billing lines: usage per charge day (a day of the billing time zone) x key x model x token class
x unit price x the record's tag set, and, on the first open month, corrections (`ChargeClass` =
`Correction`) per usage month, with `ChargePeriodStart/End` of the usage month and
`BillingPeriodStart/End` of the month that bills them. A closed month's rows are stored by the close and
rendered from the store; every FOCUS column is derived from a line by one function (`render`). A row
billed on a closed month carries the closed statement as its `InvoiceId` (`ACCOUNT/YYYY-MM`); rows of
open months have none yet.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any

import polars as pl

from metering.services.billing import canonical_tags, corrections, ledger_before
from metering.services.calendar import Calendar, State, month_date, month_key
from metering.services.documents import MONEY, Document
from metering.services.lines import CLASS_LABELS, class_lines
from metering.services.sources import snapshot
from metering.timewindows import cut, local_midnight, parse_date
from metering.tokenclasses import BY_NAME

PROVIDER_NAME = "LLM API gateway"
PROVIDER_TAGS = ("metering/account", "metering/model")  # our tag prefix: metering/
CORRECTION = "Correction"
FOCUS_STRING_NULLS = (
    "AvailabilityZone", "CapacityReservationId", "CapacityReservationStatus", "CommitmentDiscountCategory",
    "CommitmentDiscountId", "CommitmentDiscountName", "CommitmentDiscountStatus", "CommitmentDiscountType",
    "CommitmentDiscountUnit", "RegionId", "RegionName", "SkuPriceDetails",
)
UTC_US = pl.Datetime("us", "UTC")
LINE_SCHEMA = {
    "charge_class": pl.String, "usage_month": pl.String, "charge_start": UTC_US, "charge_end": UTC_US,
    "billing_start": UTC_US, "billing_end": UTC_US, "account_id": pl.String, "api_key_id": pl.String,
    "key_name": pl.String, "model": pl.String, "rate_version_id": pl.Int32, "token_class": pl.String,
    "tags": pl.String, "quantity": pl.Int64, "price": MONEY, "list_price": MONEY, "amount": MONEY,
    "list_amount": MONEY, "invoice_month": pl.String,
}
SORT = ["ChargePeriodStart", "SubAccountId", "ResourceId", "SkuPriceId", "ChargeClass", "BillingPeriodStart", "Tags"]


def _periods(cal: Calendar, buckets: list[tuple[datetime, datetime]]) -> pl.DataFrame:
    """Per bucket: its charge period, its usage month, and the billing period of that month."""
    rows = []
    for i, (start, end) in enumerate(buckets):
        first = cal.month_of(start)
        b_start, b_end = cal.bounds(first)
        rows.append({"bucket": i, "charge_start": start, "charge_end": end, "usage_month": month_key(first),
                     "billing_start": b_start, "billing_end": b_end})
    return pl.DataFrame(rows, schema={"bucket": pl.Int32, "charge_start": UTC_US, "charge_end": UTC_US,
                                      "usage_month": pl.String, "billing_start": UTC_US, "billing_end": UTC_US})


def _with_names(lines: pl.DataFrame, src: Any) -> pl.DataFrame:
    names = src.key_names
    return lines.with_columns(pl.col("api_key_id").replace_strict(names, default=None, return_dtype=pl.String)
                              .alias("key_name"))


def usage_lines(src: Any, cal: Calendar, days: list[tuple[datetime, datetime]]) -> tuple[pl.DataFrame, int]:
    """Usage rows of these (contiguous) charge days, split by tag set; and the unpriced requests left out."""
    quantities = pl.from_arrow(src.class_quantities_arrow(buckets=days, tags=True)).drop("key_name")
    unpriced = int(quantities.filter(pl.col("rate_version_id").is_null())["requests"].sum() or 0)
    lines = class_lines(canonical_tags(quantities), src.card).join(_periods(cal, days), on="bucket")
    lines = _with_names(lines.with_columns(pl.lit(None, pl.String).alias("charge_class"),
                                           pl.lit(None, pl.String).alias("invoice_month")), src)
    return lines.select(list(LINE_SCHEMA)).cast(LINE_SCHEMA), unpriced  # type: ignore[arg-type]


def correction_lines(src: Any, cal: Calendar, open_key: str) -> pl.DataFrame:
    """Corrections billed on the first open month, per usage month x key x model x price x class x tags."""
    open_first = month_date(open_key)
    ledger = ledger_before(src, cal, open_first, tags=True)
    keys = ["usage_month", "account_id", "api_key_id", "model", "rate_version_id", "token_class", "tags"]
    diff = corrections(ledger, pl.from_arrow(src.billed_focus(before=open_key)), keys, src.card)
    b_start, b_end = cal.bounds(open_first)
    bounds = {m: cal.bounds(month_date(m)) for m in set(diff["usage_month"].to_list())}
    diff = diff.with_columns(
        pl.lit(CORRECTION).alias("charge_class"), pl.lit(None, pl.String).alias("invoice_month"),
        pl.col("usage_month").replace_strict({m: b[0] for m, b in bounds.items()}, return_dtype=UTC_US)
        .alias("charge_start"),
        pl.col("usage_month").replace_strict({m: b[1] for m, b in bounds.items()}, return_dtype=UTC_US)
        .alias("charge_end"),
        pl.lit(b_start, UTC_US).alias("billing_start"), pl.lit(b_end, UTC_US).alias("billing_end"),
    )
    return _with_names(diff, src).select(list(LINE_SCHEMA)).cast(LINE_SCHEMA)  # type: ignore[arg-type]


def _tags_json(lines: pl.DataFrame) -> pl.Series:
    """FOCUS Tags: the user's tags as recorded, and ours under the `metering/` prefix, by a JSON encoder."""
    cache: dict[tuple[str, str, str], str] = {}
    out = []
    for tags, account, model in zip(lines["tags"].to_list(), lines["account_id"].to_list(), lines["model"].to_list(),
                                    strict=True):
        text = cache.get((tags, account, model))
        if text is None:
            merged = {**json.loads(tags), PROVIDER_TAGS[0]: account, PROVIDER_TAGS[1]: model}
            text = cache[(tags, account, model)] = json.dumps(merged, ensure_ascii=False, separators=(",", ":"),
                                                              sort_keys=True)
        out.append(text)
    return pl.Series("Tags", out, dtype=pl.String)


def render(lines: pl.DataFrame) -> pl.DataFrame:
    """FOCUS 1.2 columns from lines, in a total order (so a closed month renders the same bytes)."""
    lines = lines.cast(LINE_SCHEMA).with_columns(  # type: ignore[arg-type]
        _tags_json(lines),
        pl.col("token_class").replace_strict({c: t.per for c, t in BY_NAME.items()}, return_dtype=pl.Int64)
        .alias("units_per_price"),
        pl.col("token_class").replace_strict({c: t.consumed_unit for c, t in BY_NAME.items()}, return_dtype=pl.String)
        .alias("consumed_unit"),
        pl.col("token_class").replace_strict({c: t.pricing_unit for c, t in BY_NAME.items()}, return_dtype=pl.String)
        .alias("pricing_unit"),
    )
    per_unit = pl.col("units_per_price").cast(pl.Decimal(38, 0))
    pricing_quantity = (pl.col("quantity").cast(pl.Decimal(38, 12)) / per_unit).cast(MONEY)
    frame = lines.select(
        pl.col("amount").alias("BilledCost"),
        pl.col("account_id").alias("BillingAccountId"),
        pl.col("account_id").alias("BillingAccountName"),
        pl.lit("Account").alias("BillingAccountType"),
        pl.lit("USD").alias("BillingCurrency"),
        pl.col("billing_end").alias("BillingPeriodEnd"),
        pl.col("billing_start").alias("BillingPeriodStart"),
        pl.lit("Usage").alias("ChargeCategory"),
        pl.col("charge_class").alias("ChargeClass"),
        (pl.col("model") + pl.lit(" ") + pl.col("token_class").replace_strict(CLASS_LABELS, return_dtype=pl.String)
         + pl.when(pl.col("charge_class").is_not_null()).then(pl.lit(", correction for ") + pl.col("usage_month"))
         .otherwise(pl.lit(""))).alias("ChargeDescription"),
        pl.lit("Usage-Based").alias("ChargeFrequency"),
        pl.col("charge_end").alias("ChargePeriodEnd"),
        pl.col("charge_start").alias("ChargePeriodStart"),
        pl.col("quantity").cast(MONEY).alias("ConsumedQuantity"),
        pl.col("consumed_unit").alias("ConsumedUnit"),
        pl.col("amount").alias("ContractedCost"),
        pl.col("price").alias("ContractedUnitPrice"),
        pl.col("amount").alias("EffectiveCost"),
        (pl.col("account_id") + pl.lit("/") + pl.col("invoice_month")).alias("InvoiceId"),  # null until closed
        pl.lit(PROVIDER_NAME).alias("InvoiceIssuerName"),
        pl.col("list_amount").alias("ListCost"),
        pl.col("list_price").alias("ListUnitPrice"),
        pl.lit("Standard").alias("PricingCategory"),
        pl.lit("USD").alias("PricingCurrency"),
        pricing_quantity.alias("PricingQuantity"),
        pl.col("pricing_unit").alias("PricingUnit"),
        pl.lit(PROVIDER_NAME).alias("ProviderName"),
        pl.lit(PROVIDER_NAME).alias("PublisherName"),
        pl.col("api_key_id").alias("ResourceId"),
        pl.coalesce("key_name", "api_key_id").alias("ResourceName"),
        pl.lit("API Key").alias("ResourceType"),
        pl.lit("AI and Machine Learning").alias("ServiceCategory"),
        pl.col("model").alias("ServiceName"),
        pl.lit("Generative AI").alias("ServiceSubcategory"),
        (pl.col("model") + pl.lit(":") + pl.col("token_class")).alias("SkuId"),
        pl.col("token_class").alias("SkuMeter"),
        (pl.col("model") + pl.lit(":") + pl.col("token_class") + pl.lit(":v")
         + pl.col("rate_version_id").cast(pl.String)).alias("SkuPriceId"),
        pl.col("account_id").alias("SubAccountId"),
        pl.col("account_id").alias("SubAccountName"),
        pl.col("Tags"),
        *[pl.lit(None, pl.String).alias(name) for name in FOCUS_STRING_NULLS],
        pl.col("model").alias("x_Model"),
        pl.col("token_class").alias("x_TokenClass"),
        pl.col("rate_version_id").alias("x_RateVersionId"),
    ).sort(SORT, nulls_last=False, maintain_order=True)
    return frame.select([*sorted(c for c in frame.columns if not c.startswith("x_")),
                         *[c for c in frame.columns if c.startswith("x_")]])


def ordered_lines(lines: pl.DataFrame) -> pl.DataFrame:
    """Lines in the order `render` gives their rows (the order a close numbers them in)."""
    keyed = lines.with_columns(_tags_json(lines), (pl.col("model") + pl.lit(":") + pl.col("token_class") + pl.lit(":v")
                                                  + pl.col("rate_version_id").cast(pl.String)).alias("_sku"))
    return keyed.sort(["charge_start", "account_id", "api_key_id", "_sku", "charge_class", "billing_start", "Tags"],
                      nulls_last=False, maintain_order=True).drop("Tags", "_sku")


def month_lines(src: Any, state: State, cal: Calendar, first: date) -> pl.DataFrame:
    """The FOCUS lines a close of this month stores: its usage days, and its corrections."""
    start, end = cal.bounds(first)
    days = cut(start, end, "day", cal.zone)
    lines, _ = usage_lines(src, cal, days)
    if month_key(first) == state.first_open:
        lines = pl.concat([lines, correction_lines(src, cal, month_key(first))])
    return lines


def focus_export(source: Any, *, start: str | date, end: str | date) -> Document:
    """FOCUS rows of [start, end), dates of the billing time zone: usage rows of the charge days in the
    range (stored ones for closed months), and the corrections of each billing month whose first day
    lies in the range (so consecutive ranges never count a correction twice)."""
    start_d, end_d = parse_date(start, "start"), parse_date(end, "end")
    with snapshot(source) as src:
        state = State.read(src)
        cal = Calendar(state.tz)
        lo, hi = local_midnight(start_d, cal.zone), local_midnight(end_d, cal.zone)
        days = cut(lo, hi, "day", cal.zone)
        touched = sorted({month_key(cal.month_of(d[0])) for d in days})
        parts = [pl.DataFrame(schema=LINE_SCHEMA)]
        closed = [m for m in touched if m in state.closed]
        if closed:
            stored = pl.from_arrow(src.closed_focus(closed)).drop("row_no").rename({"month": "invoice_month"}).with_columns(
                pl.col(c).dt.replace_time_zone("UTC") for c in ("charge_start", "charge_end", "billing_start",
                                                                 "billing_end")).cast(LINE_SCHEMA)  # type: ignore[arg-type]
            usage = pl.col("charge_class").is_null() & pl.col("charge_start").is_between(lo, hi, closed="left")
            billed_here = pl.col("charge_class").is_not_null() & pl.col("billing_start").is_between(lo, hi, closed="left")
            parts.append(stored.filter(usage | billed_here).select(list(LINE_SCHEMA)))
        last = state.last_closed
        live = [d for d in days if last is None or month_key(cal.month_of(d[0])) > last]
        unpriced = 0
        if live:
            lines, unpriced = usage_lines(src, cal, live)
            parts.append(lines)
        if state.first_open is not None and lo <= cal.bounds(month_date(state.first_open))[0] < hi:
            parts.append(correction_lines(src, cal, state.first_open))
    frame = render(pl.concat(parts))
    meta = {"document": "focus", "focus_version": "1.2", "start": start_d.isoformat(), "end": end_d.isoformat(),
            "tz": state.tz, "unpriced_requests_excluded": unpriced}
    return Document(frame, meta)
