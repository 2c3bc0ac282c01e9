"""The token classes: the one table every price expression is derived from.

A record's usage is split into billed classes that partition what the source billed, so that
nothing is counted twice (cached and cache-write tokens are part of `input_tokens`, thinking tokens
part of `output_tokens`):

    class           quantity (from the record)                          price field (default)
    uncached_input  input_tokens - cached_tokens - cache_write_tokens    input
    cached_input    cached_tokens                                       cached_input
    cache_write     cache_write_tokens                                  cache_write (input)
    output          output_tokens - thinking_tokens                     output
    thinking        thinking_tokens                                     thinking (output)
    web_search      web_search_requests                                 web_search (free)

A quantity is a sum of record fields with integer coefficients, a null field counting as 0 (a record
that does not say how many tokens were thinking bills them all as output). The cost of a record is
the sum over the classes of quantity x unit price, in integer pico-dollars (1e-12 USD): prices have at
most 6 decimal places per 1M tokens (9 per 1,000 requests), so every unit price is a whole number of
pico-dollars and every cost is exact.

From this table come the Python pricing (`metering.pricing`), the SQL expression the store prices
with (`sql_cost`, `sql_quantity`), and the dataframe expressions of the report engines
(`linear`, for Polars and Spark columns alike). Adding a class (a 1-hour cache write, audio tokens)
is one row here, a price field in the rate card, and a record field.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

E = TypeVar("E")


@dataclass(frozen=True, slots=True)
class TokenClass:
    name: str
    price: str  # the rate card field that prices it
    fallback: str | None  # the field whose price applies when `price` is not set; None: not charged
    terms: tuple[tuple[str, int], ...]  # (record field, coefficient): quantity = sum of field x coefficient
    per: int  # units a price is quoted for: 1,000,000 tokens or 1,000 requests
    label: str
    consumed_unit: str  # FOCUS ConsumedUnit
    pricing_unit: str  # FOCUS PricingUnit

    @property
    def pico_per_usd(self) -> int:
        """A price in USD per `per` units x this = pico-dollars per unit (exact: a price has at most
        as many decimal places as this has zeros)."""
        return 10**12 // self.per


MILLION, THOUSAND = 1_000_000, 1_000
TOKENS, REQUESTS = "Tokens", "Requests"

TOKEN_CLASSES: tuple[TokenClass, ...] = (
    TokenClass("uncached_input", "input", None,
               (("input_tokens", 1), ("cached_tokens", -1), ("cache_write_tokens", -1)),
               MILLION, "input tokens (not cached)", TOKENS, "1000000 Tokens"),
    TokenClass("cached_input", "cached_input", None, (("cached_tokens", 1),),
               MILLION, "cached input tokens", TOKENS, "1000000 Tokens"),
    TokenClass("cache_write", "cache_write", "input", (("cache_write_tokens", 1),),
               MILLION, "cache write tokens", TOKENS, "1000000 Tokens"),
    TokenClass("output", "output", None, (("output_tokens", 1), ("thinking_tokens", -1)),
               MILLION, "output tokens (excluding thinking)", TOKENS, "1000000 Tokens"),
    TokenClass("thinking", "thinking", "output", (("thinking_tokens", 1),),
               MILLION, "thinking tokens", TOKENS, "1000000 Tokens"),
    TokenClass("web_search", "web_search", None, (("web_search_requests", 1),),
               THOUSAND, "web search requests", REQUESTS, "1000 Requests"),
)
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in TOKEN_CLASSES)
BY_NAME: dict[str, TokenClass] = {c.name: c for c in TOKEN_CLASSES}
# Record fields that may be null (unknown); a null counts as 0 in every quantity.
NULLABLE_FIELDS = frozenset({"thinking_tokens"})
# Every record field a quantity reads, in first-use order.
QUANTITY_FIELDS: tuple[str, ...] = tuple(dict.fromkeys(f for c in TOKEN_CLASSES for f, _ in c.terms))


def linear(terms: tuple[tuple[str, int], ...], column: Callable[[str], E]) -> E:
    """sum(column(field) x coefficient) for any column type with + and * (Python ints, Polars and
    Spark expressions). `column` must already turn a null into 0."""
    out: Any = None
    for field, coefficient in terms:
        term = column(field) if coefficient == 1 else column(field) * coefficient
        out = term if out is None else out + term
    return out


def quantities(values: Callable[[str], int | None]) -> dict[str, int]:
    """Quantity per class of one record; `values(field)` reads a field (None counts as 0)."""
    return {c.name: linear(c.terms, lambda f: values(f) or 0) for c in TOKEN_CLASSES}


# --- SQL (DuckDB) --------------------------------------------------------------------------------------


def sql_field(alias: str, field: str) -> str:
    return f"coalesce({alias}.{field}, 0)" if field in NULLABLE_FIELDS else f"{alias}.{field}"


def sql_quantity(token_class: TokenClass, alias: str, *, cast: str = "") -> str:
    """The class's quantity as SQL over the record columns of `alias`; `cast` (e.g. "HUGEINT") is
    applied to each field before the arithmetic."""
    parts = []
    for field, coefficient in token_class.terms:
        column = sql_field(alias, field) + (f"::{cast}" if cast else "")
        sign = "-" if coefficient < 0 else "+"
        magnitude = abs(coefficient)
        parts.append(f"{sign} {column}" + (f" * {magnitude}" if magnitude != 1 else ""))
    text = " ".join(parts)
    return "(" + (text[2:] if text.startswith("+ ") else text) + ")"


def unit_column(basis: str, token_class: TokenClass) -> str:
    """The column of a unit-price table holding a class's pico-dollars per unit for a basis."""
    return f"{basis}_{token_class.name}"


def sql_cost(basis: str, *, record: str = "l", units: str = "v") -> str:
    """The integer cost of a record in HUGEINT: sum over classes of quantity x the unit price in the
    unit-price table's column `unit_column(basis, class)`. Cast the result: a cost beyond BIGINT
    fails the cast rather than wrapping."""
    terms = [f"{sql_quantity(c, record, cast='HUGEINT')} * {units}.{unit_column(basis, c)}" for c in TOKEN_CLASSES]
    return "(" + "\n + ".join(terms) + ")"
