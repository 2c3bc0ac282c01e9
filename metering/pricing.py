"""Pricing: record x rate version -> cost and list cost per token class. Pure, exact.

The classes, their quantities and their prices come from `metering.tokenclasses`. A unit price is
a whole number of pico-dollars (1e-12 USD) per token or request, so every cost below is a Python
int, computed and summed without rounding; `Decimal` appears only at the edges (`to_usd`).
"""

from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache

import pyarrow as pa

from metering.ratecard import Price, RateCard, RateVersion, format_decimal
from metering.records import UsageRecord, epoch_micros
from metering.tokenclasses import CLASS_NAMES, QUANTITY_FIELDS, TOKEN_CLASSES, TokenClass, quantities, unit_column

PICO = 10**12
MAX_COST_PICO = 2**63 - 1
COST_OUT_OF_RANGE = "the cost of this record is beyond the supported range (2^63-1 pico-dollars)"
BASES = ("current", "list")


def to_usd(pico: int) -> Decimal:
    """Integer pico-dollars -> exact Decimal USD."""
    return Decimal(pico).scaleb(-12)


def usd_string(pico: int) -> str:
    """Pico-dollars -> the JSON money string: exact, plain, no exponent ("0.0002505")."""
    return format_decimal(to_usd(pico))


def from_usd(amount: Decimal) -> int:
    """Exact Decimal USD -> integer pico-dollars (raises if not a whole number of picos)."""
    scaled = amount.scaleb(12)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{amount} has more than 12 decimal places")
    return int(scaled)


def class_price(version: RateVersion, token_class: TokenClass) -> Price | None:
    """The price of a class in a version: its own field, else its fallback's; None: not charged."""
    price = getattr(version, token_class.price)
    if price is None and token_class.fallback is not None:
        price = getattr(version, token_class.fallback)
    return price


class UnitPrices(namedtuple("UnitPrices", CLASS_NAMES)):
    """Pico-dollars per unit (token or request) of each class, in TOKEN_CLASSES order, for one basis."""

    __slots__ = ()

    @classmethod
    def of(cls, version: RateVersion, basis: str) -> UnitPrices:
        units = []
        for token_class in TOKEN_CLASSES:
            price = class_price(version, token_class)
            units.append(int(getattr(price, basis) * token_class.pico_per_usd) if price is not None else 0)
        return cls(*units)


class Breakdown(namedtuple("Breakdown", CLASS_NAMES)):
    """Cost per class in pico-dollars, in TOKEN_CLASSES order; the classes partition the cost."""

    __slots__ = ()

    @property
    def total(self) -> int:
        return sum(self)

    def as_usd(self) -> dict[str, Decimal]:
        """Per class in USD, with `output` including the thinking it bills (thinking is a part of the
        output tokens, shown on its own too), and the total."""
        out = {name: to_usd(pico) for name, pico in zip(CLASS_NAMES, self, strict=True)}
        out["output"] = to_usd(self.output + self.thinking)
        out["total"] = to_usd(self.total)
        return out


@dataclass(frozen=True, slots=True)
class PricedRecord:
    version_id: int | None
    cost: Breakdown
    list_cost: Breakdown


class CostOverflow(ValueError):
    pass


def _checked(total: int) -> int:
    if total > MAX_COST_PICO:
        raise CostOverflow(f"cost {to_usd(total)} USD of one record is beyond the supported range")
    return total


def breakdown(record: UsageRecord, unit: UnitPrices) -> Breakdown:
    amounts = quantities(lambda field: getattr(record, field))
    result = Breakdown(*(amounts[name] * price for name, price in zip(CLASS_NAMES, unit, strict=True)))
    _checked(result.total)
    return result


@lru_cache(maxsize=4096)
def field_weights(unit: UnitPrices) -> tuple[tuple[str, int], ...]:
    """The cost of one unit of each record field under these prices (the classes' linear terms folded
    per field), so a record's total is one product per field: the same integer as `breakdown`."""
    weights = dict.fromkeys(QUANTITY_FIELDS, 0)
    for token_class, price in zip(TOKEN_CLASSES, unit, strict=True):
        for field, coefficient in token_class.terms:
            weights[field] += coefficient * price
    return tuple(weights.items())


def total_pico(record: UsageRecord, unit: UnitPrices) -> int:
    """The total of `breakdown(record, unit)`, without building it: the ingest hot path."""
    return _checked(sum((getattr(record, field) or 0) * weight for field, weight in field_weights(unit)))


@lru_cache(maxsize=4096)
def unit_prices(version: RateVersion, basis: str) -> UnitPrices:
    return UnitPrices.of(version, basis)


def price_record(record: UsageRecord, version: RateVersion) -> PricedRecord:
    """Cost and list cost of one record under one rate version."""
    return PricedRecord(
        version_id=version.id,
        cost=breakdown(record, unit_prices(version, "current")),
        list_cost=breakdown(record, unit_prices(version, "list")),
    )


def units_table(card: RateCard) -> pa.Table:
    """Every version's unit prices as an Arrow table, for pricing in SQL (`tokenclasses.sql_cost`):
    `version_id`, `model`, `effective_from` (naive UTC) and one column per basis and class,
    `tokenclasses.unit_column(basis, class)`, in pico-dollars per unit. A version appears once under
    its model's name and once under each alias, so a join on the record's model id prices an alias as
    `RateCard.version_at` does."""
    spellings: dict[str, list[str]] = {}
    for alias, model in sorted(card.aliases.items()):
        spellings.setdefault(model, []).append(alias)
    rows = [(v, name) for v in card.all_versions() for name in (v.model, *spellings.get(v.model, ()))]
    versions = [v for v, _ in rows]
    arrays: dict[str, pa.Array] = {
        "version_id": pa.array([v.id for v in versions], pa.int32()),
        "model": pa.array([name for _, name in rows], pa.string()),
        "effective_from": pa.array([epoch_micros(v.effective_from) for v in versions], pa.int64()).cast(
            pa.timestamp("us")),
    }
    for basis, short in (("current", "cur"), ("list", "list")):
        units = [unit_prices(v, basis) for v in versions]
        for i, token_class in enumerate(TOKEN_CLASSES):
            arrays[unit_column(short, token_class)] = pa.array([u[i] for u in units], pa.int64())
    return pa.table(arrays)
