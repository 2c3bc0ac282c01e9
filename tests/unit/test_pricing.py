"""Pricing is exact: results against expected values computed by hand."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from metering.pricing import from_usd, price_record, to_usd, usd_string
from metering.ratecard import Price, RateVersion, load_rate_card
from metering.records import parse_record
from metering.settings import DEFAULT_RATE_CARD
from tests.conftest import NOW, record

SEED = load_rate_card(DEFAULT_RATE_CARD).version_at("minimax-m2-7", NOW)


def version(**prices: Price) -> RateVersion:
    base = {"input": Price(Decimal("0.15"), Decimal("0.30")), "cached_input": Price(Decimal("0.03"), Decimal("0.06")),
            "output": Price(Decimal("0.60"), Decimal("1.20"))}
    return RateVersion(model="m", effective_from=datetime(2025, 1, 1, tzinfo=UTC), **{**base, **prices})


def test_worked_example_costs_exactly_0_0002505_and_lists_at_0_000501():
    rec = parse_record({
        "request_id": "r", "occurred_at": "2026-11-25T10:00:00Z", "api_key_id": "k", "model": "minimax-m2-7",
        "endpoint": "chat.completions",
        "usage": {"prompt_tokens": 2006, "completion_tokens": 300, "prompt_tokens_details": {"cached_tokens": 1920},
                  "completion_tokens_details": {"reasoning_tokens": 200}},
    }, now=NOW)
    priced = price_record(rec, SEED)
    assert to_usd(priced.cost.total) == Decimal("0.0002505")
    assert to_usd(priced.list_cost.total) == Decimal("0.000501")
    assert usd_string(priced.cost.total) == "0.0002505"
    # 86 uncached x 0.15 + 1920 cached x 0.03 + 300 output x 0.60, per million
    assert priced.cost.as_usd() == {
        "uncached_input": Decimal("0.0000129"), "cached_input": Decimal("0.0000576"), "cache_write": Decimal(0),
        "output": Decimal("0.00018"), "thinking": Decimal("0.00012"), "web_search": Decimal(0),
        "total": Decimal("0.0002505"),
    }


def test_thinking_is_billed_as_output_and_not_twice():
    rec = parse_record(record(input_tokens=0, cached_tokens=0, output_tokens=1000, thinking_tokens=1000), now=NOW)
    assert to_usd(price_record(rec, SEED).cost.total) == Decimal("0.0006")  # 1000 x 0.60 / 1M, not 2x
    unknown = parse_record(record(input_tokens=0, cached_tokens=0, output_tokens=1000, thinking_tokens=None), now=NOW)
    assert price_record(unknown, SEED).cost.total == price_record(rec, SEED).cost.total


def test_optional_prices_cache_write_thinking_and_web_search():
    v = version(cache_write=Price(Decimal("0.375"), Decimal("0.75")), thinking=Price(Decimal("0.9"), Decimal("1.8")),
                web_search=Price(Decimal("10"), Decimal("25")))
    rec = parse_record(record(input_tokens=1_000_000, cached_tokens=200_000, cache_write_tokens=300_000,
                              output_tokens=1_000_000, thinking_tokens=400_000, web_search_requests=3), now=NOW)
    cost = price_record(rec, v).cost.as_usd()
    assert cost["uncached_input"] == Decimal("0.075")  # 500k x 0.15
    assert cost["cached_input"] == Decimal("0.006")  # 200k x 0.03
    assert cost["cache_write"] == Decimal("0.1125")  # 300k x 0.375
    assert cost["thinking"] == Decimal("0.36")  # 400k x 0.9
    assert cost["output"] == Decimal("0.72")  # 600k x 0.60 + the thinking
    assert cost["web_search"] == Decimal("0.03")  # 3 x 10 / 1000
    assert cost["total"] == Decimal("0.9435")
    assert to_usd(price_record(rec, v).list_cost.total) == Decimal("1.902")  # 0.15 + 0.012 + 0.225 + 0.72 + 0.72 + 0.075


def test_cache_writes_default_to_the_input_price():
    rec = parse_record(record(input_tokens=100, cached_tokens=0, cache_write_tokens=100, output_tokens=0,
                              thinking_tokens=None), now=NOW)
    assert to_usd(price_record(rec, SEED).cost.cache_write) == Decimal("0.000015")


@pytest.mark.parametrize("amount", ["0.000000000001", "123.456", "0"])
def test_usd_pico_round_trip(amount):
    assert to_usd(from_usd(Decimal(amount))) == Decimal(amount)


def test_from_usd_refuses_sub_pico_amounts():
    with pytest.raises(ValueError, match="12 decimal places"):
        from_usd(Decimal("0.0000000000001"))


def test_usd_string_is_plain_without_exponent():
    assert usd_string(1) == "0.000000000001"
    assert usd_string(0) == "0"
    assert usd_string(10**15) == "1000"


def test_fast_total_equals_the_breakdown_on_random_records():
    import random

    from metering.pricing import breakdown, total_pico, unit_prices
    from tests.conftest import generate_records

    v = version(cache_write=Price(Decimal("0.375"), Decimal("0.75")), thinking=Price(Decimal("0.9"), Decimal("1.8")),
                web_search=Price(Decimal("10"), Decimal("25")))
    rng = random.Random(4)
    for raw in generate_records(2000, seed=rng.randrange(1000)):
        rec = parse_record({**raw, "model": "m"}, now=NOW)
        for basis in ("current", "list"):
            unit = unit_prices(v, basis)
            assert total_pico(rec, unit) == breakdown(rec, unit).total
