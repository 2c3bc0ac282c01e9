"""Pricing: record x rate version -> cost and list cost per token class. Pure, exact.

A token price has at most 6 decimal places per 1M tokens, so one token costs an integer
number of pico-dollars (1e-12 USD); a web search price has at most 9 places per 1,000
requests, so one request does too. All arithmetic below is on Python ints, hence exact;
`Decimal` appears only at the edges (`to_usd`).

Token classes (they partition what was billed; nothing is counted twice):
    uncached_input = input - cached - cache_write       at the input price
    cached_input   = cached                              at the cached-input price
    cache_write    = cache_write                         at the cache-write price (default: input)
    output         = output, of which thinking           non-thinking at the output price,
    thinking       = thinking (a part of output)         thinking at the thinking price (default: output)
    web_search     = web search requests                 at the web search price (default: free)
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache

from metering.ratecard import Price, RateVersion, format_decimal
from metering.records import UsageRecord

PICO = 10**12
MAX_COST_PICO = 2**63 - 1


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


@dataclass(frozen=True, slots=True)
class UnitPrices:
    """Pico-dollars per token (per request for web search), for one basis (current or list)."""

    input: int
    cached_input: int
    cache_write: int
    output: int
    thinking: int
    web_search: int

    @classmethod
    def of(cls, version: RateVersion, basis: str) -> UnitPrices:
        def per_token(price: Price) -> int:
            return int(getattr(price, basis).scaleb(6))  # USD per 1M tokens -> pico per token

        search = version.web_search
        return cls(
            input=per_token(version.input),
            cached_input=per_token(version.cached_input),
            cache_write=per_token(version.effective_cache_write),
            output=per_token(version.output),
            thinking=per_token(version.effective_thinking),
            web_search=int(getattr(search, basis).scaleb(9)) if search else 0,  # per 1,000 -> pico each
        )


@dataclass(frozen=True, slots=True)
class Breakdown:
    """Cost per token class in pico-dollars. `thinking` is a part of `output`."""

    uncached_input: int
    cached_input: int
    cache_write: int
    output: int
    thinking: int
    web_search: int

    @property
    def total(self) -> int:
        return self.uncached_input + self.cached_input + self.cache_write + self.output + self.web_search

    def as_usd(self) -> dict[str, Decimal]:
        return {
            "uncached_input": to_usd(self.uncached_input),
            "cached_input": to_usd(self.cached_input),
            "cache_write": to_usd(self.cache_write),
            "output": to_usd(self.output),
            "thinking": to_usd(self.thinking),
            "web_search": to_usd(self.web_search),
            "total": to_usd(self.total),
        }


@dataclass(frozen=True, slots=True)
class PricedRecord:
    version_id: int | None
    cost: Breakdown
    list_cost: Breakdown


class CostOverflow(ValueError):
    pass


def breakdown(record: UsageRecord, unit: UnitPrices) -> Breakdown:
    thinking = record.thinking_tokens or 0
    thinking_cost = thinking * unit.thinking
    result = Breakdown(
        uncached_input=record.uncached_input_tokens * unit.input,
        cached_input=record.cached_tokens * unit.cached_input,
        cache_write=record.cache_write_tokens * unit.cache_write,
        output=(record.output_tokens - thinking) * unit.output + thinking_cost,
        thinking=thinking_cost,
        web_search=record.web_search_requests * unit.web_search,
    )
    if result.total > MAX_COST_PICO:
        raise CostOverflow(f"cost {to_usd(result.total)} USD of one record is beyond the supported range")
    return result


def total_pico(record: UsageRecord, unit: UnitPrices) -> int:
    """The total of `breakdown(record, unit)`, without building it: the ingest hot path."""
    thinking = record.thinking_tokens or 0
    total = ((record.input_tokens - record.cached_tokens - record.cache_write_tokens) * unit.input
             + record.cached_tokens * unit.cached_input
             + record.cache_write_tokens * unit.cache_write
             + (record.output_tokens - thinking) * unit.output
             + thinking * unit.thinking
             + record.web_search_requests * unit.web_search)
    if total > MAX_COST_PICO:
        raise CostOverflow(f"cost {to_usd(total)} USD of one record is beyond the supported range")
    return total


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
