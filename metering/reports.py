"""Finance documents, built with Polars over Arrow from DuckDB: the daily cost report, the
monthly statement per account, and the FOCUS 1.2 cost and usage export.

Money stays exact: DECIMAL(38, 12) USD from DuckDB, Polars Decimal columns, Python Decimal.
Only the statement rounds, to cents, by the rule it prints (`ROUNDING_RULE`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from typing import Any, Protocol

import polars as pl
import pyarrow as pa

from metering.errors import BadRequest
from metering.pricing import class_price
from metering.ratecard import RateCard, format_decimal
from metering.store import queries
from metering.timewindows import cut, local_midnight, zone
from metering.tokenclasses import CLASS_NAMES, TOKEN_CLASSES

MONEY = pl.Decimal(38, 12)
CENT = Decimal("0.01")
DEFAULT_DAILY_GROUP = "account_id,api_key_id,model"
DAILY_FORMATS = ("json", "csv", "parquet", "xlsx")
STATEMENT_FORMATS = ("json", "csv", "xlsx")
FOCUS_FORMATS = ("csv", "parquet")
MEDIA_TYPES = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
ROUNDING_RULE = (
    "Amounts are computed exactly (to 1e-12 USD) and rounded only on this statement: the total is "
    "rounded half-up to the cent; each line is rounded down to the cent and the cents left over go, one "
    "each, to the lines with the largest remainders (ties in line order), so the rounded lines add up to "
    "the rounded total."
)
CLASS_LABELS = {c.name: c.label for c in TOKEN_CLASSES}


class ReportSource(Protocol):
    """Where the documents' two intermediate tables come from: the DuckDB store (`StoreSource`) or
    the lake through Spark (`metering.lake.spark_source`); both give the same schemas and order."""

    card: RateCard

    def clock(self) -> datetime: ...

    def usage_arrow(self, *, buckets: list[tuple[datetime, datetime]], group_by: queries.GroupBy) -> pa.Table: ...

    def class_quantities_arrow(self, *, buckets: list[tuple[datetime, datetime]],
                               account_id: str | None = None) -> pa.Table: ...


class StoreSource:
    """A ReportSource over the DuckDB store: each table read in a snapshot of its own."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.card = store.card
        self.clock = store.clock

    def usage_arrow(self, *, buckets: list[tuple[datetime, datetime]], group_by: queries.GroupBy) -> pa.Table:
        with self.store.reading() as cur:
            return queries.usage_arrow(cur, buckets=buckets, group_by=group_by)

    def class_quantities_arrow(self, *, buckets: list[tuple[datetime, datetime]],
                               account_id: str | None = None) -> pa.Table:
        with self.store.reading() as cur:
            return queries.class_quantities_arrow(cur, buckets=buckets, account_id=account_id)


def as_source(store: Any) -> ReportSource:
    """A report source as it is, or a store wrapped in one."""
    return store if hasattr(store, "usage_arrow") else StoreSource(store)


def parse_date(value: str | date, name: str) -> date:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(value)
    except (TypeError, ValueError):
        raise BadRequest(f"{name}: not a date (YYYY-MM-DD): {value!r}") from None


def parse_month(value: str) -> date:
    try:
        return datetime.strptime(value, "%Y-%m").date()
    except (TypeError, ValueError):
        raise BadRequest(f"month: not a month (YYYY-MM): {value!r}") from None


def check_format(fmt: str, allowed: tuple[str, ...]) -> str:
    if fmt not in allowed:
        raise BadRequest(f"format: must be one of {', '.join(allowed)}, got {fmt!r}")
    return fmt


def price_frame(card: RateCard) -> pl.DataFrame:
    """Per rate version and class: the unit price per token (or request) and per pricing unit."""
    rows = []
    for version in card.all_versions():
        for token_class in TOKEN_CLASSES:
            price = class_price(version, token_class)
            current, listed = (price.current, price.list) if price is not None else (Decimal(0), Decimal(0))
            rows.append({
                "rate_version_id": version.id,
                "token_class": token_class.name,
                "price": current,
                "list_price": listed,
                "unit_cost": current / token_class.per,
                "list_unit_cost": listed / token_class.per,
                "pricing_unit": token_class.pricing_unit,
                "consumed_unit": token_class.consumed_unit,
                "units_per_price": token_class.per,
            })
    schema = {"rate_version_id": pl.Int32, "token_class": pl.String, "price": MONEY, "list_price": MONEY,
              "unit_cost": MONEY, "list_unit_cost": MONEY, "pricing_unit": pl.String, "consumed_unit": pl.String,
              "units_per_price": pl.Int64}
    return pl.DataFrame(rows, schema=schema)


def class_lines(quantities: pl.DataFrame, card: RateCard) -> pl.DataFrame:
    """Quantities per class -> priced lines (one per class with a non-zero quantity), with exact
    amounts; checks that the lines of each group add up to the costs stored in the ledger."""
    keys = [c for c in quantities.columns if c not in (*CLASS_NAMES, "requests", "cost_pico",
                                                        "list_cost_pico")]
    priced = quantities.filter(pl.col("rate_version_id").is_not_null())
    long = priced.unpivot(index=keys, on=list(CLASS_NAMES), variable_name="token_class",
                          value_name="quantity").filter(pl.col("quantity") > 0)
    lines = long.join(price_frame(card), on=["rate_version_id", "token_class"], how="left").with_columns(
        (pl.col("quantity").cast(pl.Decimal(38, 0)) * pl.col("unit_cost")).cast(MONEY).alias("amount"),
        (pl.col("quantity").cast(pl.Decimal(38, 0)) * pl.col("list_unit_cost")).cast(MONEY).alias("list_amount"),
    )
    stored = priced.group_by(keys).agg(
        (pl.col("cost_pico").sum() * Decimal("0.000000000001")).cast(MONEY).alias("stored"),
        (pl.col("list_cost_pico").sum() * Decimal("0.000000000001")).cast(MONEY).alias("stored_list"),
    )
    summed = lines.group_by(keys).agg(pl.col("amount").sum().cast(MONEY), pl.col("list_amount").sum().cast(MONEY))
    check = stored.join(summed, on=keys, how="left").with_columns(
        pl.col("amount").fill_null(Decimal(0)), pl.col("list_amount").fill_null(Decimal(0)))
    bad = check.filter((pl.col("stored") != pl.col("amount")) | (pl.col("stored_list") != pl.col("list_amount")))
    if bad.height:
        raise RuntimeError(f"priced lines do not reconcile with the ledger's stored costs: {bad.head(3).to_dicts()}")
    return lines


# --- the daily report ---------------------------------------------------------------------------------


@dataclass
class Document:
    frame: pl.DataFrame
    meta: dict[str, Any]


def daily_report(store: Any, *, start: str | date | None = None, end: str | date | None = None, tz: str = "UTC",
                 group_by: str | None = None) -> Document:
    """One row per local day and group, then a totals row (`row_type` = "total"). Without start
    or end: the last 30 local days, today included."""
    zone_info = zone(tz)
    source = as_source(store)
    default_start, default_end = default_window(source.clock(), tz)
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
    )
    meta = {"report": "daily", "currency": "USD", "tz": tz, "start": start_d.isoformat(), "end": end_d.isoformat(),
            "group_by": fields}
    return Document(out, meta)


def _share(numerator: pl.Expr, denominator: pl.Expr) -> pl.Expr:
    """A ratio (not money, so a float is fine), null where the denominator is zero."""
    den = denominator.cast(pl.Float64)
    return pl.when(den > 0).then((numerator.cast(pl.Float64) / den).round(6)).otherwise(None)


# --- the monthly statement ---------------------------------------------------------------------------


def statement(store: Any, *, account: str, month: str, tz: str = "UTC") -> Document:
    """Lines per key x model x token class x unit price, exact and rounded to cents."""
    zone_info = zone(tz)
    first = parse_month(month)
    nxt = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    window = [(local_midnight(first, zone_info), local_midnight(nxt, zone_info))]
    source = as_source(store)
    quantities = pl.from_arrow(source.class_quantities_arrow(buckets=window, account_id=account))
    unpriced = quantities.filter(pl.col("rate_version_id").is_null())
    lines = class_lines(quantities.drop("bucket", "key_name", "account_id"), source.card)
    order = {c: i for i, c in enumerate(CLASS_NAMES)}
    lines = lines.with_columns(pl.col("token_class").replace_strict(order, return_dtype=pl.Int32).alias("_o")).sort(
        "api_key_id", "model", "rate_version_id", "_o").drop("_o")
    exact = [Decimal(a) for a in lines["amount"].to_list()]
    exact_list = [Decimal(a) for a in lines["list_amount"].to_list()]
    rounded, total_rounded = round_lines(exact)
    rounded_list, total_list_rounded = round_lines(exact_list)
    lines = lines.with_columns(
        pl.Series("amount_rounded", rounded, dtype=pl.Decimal(38, 2)),
        pl.Series("list_amount_rounded", rounded_list, dtype=pl.Decimal(38, 2)),
        pl.col("token_class").replace_strict(CLASS_LABELS, return_dtype=pl.String).alias("description"),
    ).select("api_key_id", "model", "rate_version_id", "token_class", "description", "quantity", "consumed_unit",
             "price", "list_price", "pricing_unit", "amount", "amount_rounded", "list_amount", "list_amount_rounded")
    meta = {
        "document": "statement", "account_id": account, "month": first.strftime("%Y-%m"), "tz": tz,
        "period_start": window[0][0].isoformat().replace("+00:00", "Z"),
        "period_end": window[0][1].isoformat().replace("+00:00", "Z"),
        "currency": "USD", "rounding": ROUNDING_RULE,
        "totals": {
            "amount": sum(exact, Decimal(0)), "amount_rounded": total_rounded,
            "list_amount": sum(exact_list, Decimal(0)), "list_amount_rounded": total_list_rounded,
            "savings_rounded": total_list_rounded - total_rounded,
        },
        "requests": int(quantities["requests"].sum() or 0),
        "unpriced_requests": int(unpriced["requests"].sum() or 0),
    }
    return Document(lines, meta)


def round_lines(amounts: list[Decimal]) -> tuple[list[Decimal], Decimal]:
    """Cents per line that add up to the total rounded half-up (largest-remainder method)."""
    total = sum(amounts, Decimal(0)).quantize(CENT, rounding=ROUND_HALF_UP)
    floors = [a.quantize(CENT, rounding=ROUND_DOWN) for a in amounts]
    left = int((total - sum(floors, Decimal(0))) / CENT)
    by_remainder = sorted(range(len(amounts)), key=lambda i: (-(amounts[i] - floors[i]), i))
    for i in by_remainder[:left]:
        floors[i] += CENT
    return floors, total


# --- FOCUS 1.2 ------------------------------------------------------------------------------------------

PROVIDER_NAME = "LLM API gateway"
FOCUS_STRING_NULLS = (
    "AvailabilityZone", "CapacityReservationId", "CapacityReservationStatus", "ChargeClass",
    "CommitmentDiscountCategory", "CommitmentDiscountId", "CommitmentDiscountName", "CommitmentDiscountStatus",
    "CommitmentDiscountType", "CommitmentDiscountUnit", "InvoiceId", "RegionId", "RegionName", "SkuPriceDetails",
)


def focus_export(store: Any, *, start: str | date, end: str | date) -> Document:
    """FOCUS 1.2 rows: one per charge period (UTC day) x key x model x token class x price."""
    start_d, end_d = parse_date(start, "start"), parse_date(end, "end")
    utc = zone("UTC")
    buckets = cut(local_midnight(start_d, utc), local_midnight(end_d, utc), "day", utc)
    source = as_source(store)
    quantities = pl.from_arrow(source.class_quantities_arrow(buckets=buckets))
    days = pl.DataFrame({"bucket": list(range(len(buckets))), "day": [b[0] for b in buckets]},
                        schema={"bucket": pl.Int32, "day": pl.Datetime("us", "UTC")})
    lines = class_lines(quantities.drop("key_name"), source.card).join(days, on="bucket").join(
        quantities.select("bucket", "api_key_id", "model", "rate_version_id", "key_name").unique(),
        on=["bucket", "api_key_id", "model", "rate_version_id"], how="left")
    per_unit = pl.col("units_per_price").cast(pl.Decimal(38, 0))
    pricing_quantity = (pl.col("quantity").cast(pl.Decimal(38, 12)) / per_unit).cast(MONEY)
    month_start = pl.col("day").dt.month_start()
    frame = lines.select(
        pl.col("amount").alias("BilledCost"),
        pl.col("account_id").alias("BillingAccountId"),
        pl.col("account_id").alias("BillingAccountName"),
        pl.lit("Account").alias("BillingAccountType"),
        pl.lit("USD").alias("BillingCurrency"),
        month_start.dt.offset_by("1mo").alias("BillingPeriodEnd"),
        month_start.alias("BillingPeriodStart"),
        pl.lit("Usage").alias("ChargeCategory"),
        (pl.col("model") + pl.lit(" ") + pl.col("token_class").replace_strict(CLASS_LABELS, return_dtype=pl.String)
         ).alias("ChargeDescription"),
        pl.lit("Usage-Based").alias("ChargeFrequency"),
        pl.col("day").dt.offset_by("1d").alias("ChargePeriodEnd"),
        pl.col("day").alias("ChargePeriodStart"),
        pl.col("quantity").cast(MONEY).alias("ConsumedQuantity"),
        pl.col("consumed_unit").alias("ConsumedUnit"),
        pl.col("amount").alias("ContractedCost"),
        pl.col("price").alias("ContractedUnitPrice"),
        pl.col("amount").alias("EffectiveCost"),
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
        pl.format('{{"metering/account":"{}","metering/model":"{}"}}', "account_id", "model").alias("Tags"),
        *[pl.lit(None, pl.String).alias(name) for name in FOCUS_STRING_NULLS],
        pl.col("model").alias("x_Model"),
        pl.col("token_class").alias("x_TokenClass"),
        pl.col("rate_version_id").alias("x_RateVersionId"),
    ).sort("ChargePeriodStart", "SubAccountId", "ResourceId", "SkuPriceId")
    frame = frame.select([*sorted(c for c in frame.columns if not c.startswith("x_")),
                          *[c for c in frame.columns if c.startswith("x_")]])
    meta = {"document": "focus", "focus_version": "1.2", "start": start_d.isoformat(), "end": end_d.isoformat(),
            "unpriced_requests_excluded": int(quantities.filter(pl.col("rate_version_id").is_null())["requests"].sum()
                                              or 0)}
    return Document(frame, meta)


# --- rendering -------------------------------------------------------------------------------------------


def _json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format_decimal(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    return value


def to_json(doc: Document) -> dict[str, Any]:
    rows = [{k: _json_value(v) for k, v in row.items()} for row in doc.frame.to_dicts()]
    out = {k: _json_value(v) for k, v in doc.meta.items()}
    if "row_type" in doc.frame.columns:
        out["rows"] = [r for r in rows if r["row_type"] != "total"]
        totals = [r for r in rows if r["row_type"] == "total"]
        out["totals"] = totals[0] if totals else None
    else:
        out["lines"] = rows
    return out


def render(doc: Document, fmt: str) -> bytes:
    if fmt == "json":
        import orjson

        return orjson.dumps(to_json(doc))
    if fmt == "csv":
        frame = doc.frame
        if doc.meta.get("document") == "statement":
            frame = _with_statement_total(doc)
        return frame.write_csv(datetime_format="%Y-%m-%dT%H:%M:%SZ").encode()
    if fmt == "parquet":
        buffer = io.BytesIO()
        doc.frame.write_parquet(buffer)
        return buffer.getvalue()
    if fmt == "xlsx":
        return _xlsx(doc)
    raise BadRequest(f"format: unknown {fmt!r}")


def _with_statement_total(doc: Document) -> pl.DataFrame:
    t = doc.meta["totals"]
    total = pl.DataFrame([{"description": "TOTAL", "amount": t["amount"], "amount_rounded": t["amount_rounded"],
                           "list_amount": t["list_amount"], "list_amount_rounded": t["list_amount_rounded"]}],
                         schema={"description": pl.String, "amount": MONEY, "amount_rounded": pl.Decimal(38, 2),
                                 "list_amount": MONEY, "list_amount_rounded": pl.Decimal(38, 2)})
    return pl.concat([doc.frame, total], how="diagonal_relaxed")


MONEY_FORMAT = '"$"#,##0.00####'
CENTS_FORMAT = '"$"#,##0.00'
SHARE_FORMAT = "0.00%"
COUNT_FORMAT = "#,##0"


def _xlsx(doc: Document) -> bytes:
    """A workbook finance can open: currency-formatted money, a filterable header, frozen panes.
    Excel stores numbers as binary floats; the exact figures are in the CSV, Parquet and JSON."""
    frame = doc.frame
    title_rows = 0
    if doc.meta.get("document") == "statement":
        frame = _with_statement_total(doc)
        title_rows = 4
    formats: dict[str, str] = {}
    for name, dtype in frame.schema.items():
        if name.endswith("_rounded"):
            formats[name] = CENTS_FORMAT
        elif isinstance(dtype, pl.Decimal) and name not in ("quantity",):
            formats[name] = MONEY_FORMAT
        elif name.endswith(("_share", "_rate")):
            formats[name] = SHARE_FORMAT
        elif dtype.is_integer():
            formats[name] = COUNT_FORMAT
    excel = frame.with_columns(pl.col(n).cast(pl.Float64) for n, t in frame.schema.items() if isinstance(t, pl.Decimal))
    buffer = io.BytesIO()
    import xlsxwriter

    with xlsxwriter.Workbook(buffer, {"in_memory": True}) as workbook:
        sheet = workbook.add_worksheet(doc.meta.get("document", doc.meta.get("report", "report")))
        if title_rows:
            bold = workbook.add_format({"bold": True})
            sheet.write(0, 0, f"Statement for account {doc.meta['account_id']}, {doc.meta['month']} ({doc.meta['tz']})",
                        bold)
            sheet.write(1, 0, f"Period {doc.meta['period_start']} to {doc.meta['period_end']}, USD")
            sheet.write(2, 0, doc.meta["rounding"])
        excel.write_excel(workbook, worksheet=sheet, position=(title_rows, 0), column_formats=formats,
                          autofilter=True, autofit=True, freeze_panes=(title_rows + 1, 0), table_style=None,
                          dtype_formats={pl.Date: "yyyy-mm-dd", pl.Datetime: "yyyy-mm-dd hh:mm"})
    return buffer.getvalue()


def default_window(now: datetime, tz: str) -> tuple[date, date]:
    today = now.astimezone(zone(tz)).date()
    return today - timedelta(days=29), today + timedelta(days=1)
