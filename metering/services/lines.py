"""Priced lines: quantities per token class x rate version -> exact amounts, checked against the
ledger's stored costs; and the statement's rounding to cents by its stated rule."""

from __future__ import annotations

from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal

import polars as pl

from metering.pricing import class_price
from metering.ratecard import RateCard
from metering.services.documents import MONEY
from metering.tokenclasses import CLASS_NAMES, TOKEN_CLASSES

CENT = Decimal("0.01")
ROUNDING_RULE = (
    "Amounts are computed exactly (to 1e-12 USD) and rounded only on this statement: the total is "
    "rounded half-up to the cent; each line is rounded down to the cent and the cents left over go, one "
    "each, to the lines with the largest remainders (ties in line order), so the rounded lines add up to "
    "the rounded total."
)
CLASS_LABELS = {c.name: c.label for c in TOKEN_CLASSES}


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


def round_lines(amounts: list[Decimal]) -> tuple[list[Decimal], Decimal]:
    """Cents per line that add up to the total rounded half-up (largest-remainder method)."""
    total = sum(amounts, Decimal(0)).quantize(CENT, rounding=ROUND_HALF_UP)
    floors = [a.quantize(CENT, rounding=ROUND_FLOOR) for a in amounts]  # toward -inf: credits too
    left = int((total - sum(floors, Decimal(0))) / CENT)
    by_remainder = sorted(range(len(amounts)), key=lambda i: (-(amounts[i] - floors[i]), i))
    for i in by_remainder[:left]:
        floors[i] += CENT
    return floors, total
