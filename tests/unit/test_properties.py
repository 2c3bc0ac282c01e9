"""Properties of normalization and pricing, checked on generated usage (Hypothesis)."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from metering.pricing import breakdown, price_record, total_pico, unit_prices
from metering.ratecard import Price, RateVersion
from metering.records import parse_record
from tests.conftest import NOW

BASE = {"request_id": "r", "occurred_at": "2026-11-25T10:00:00Z", "api_key_id": "k", "model": "m"}
counts = st.integers(min_value=0, max_value=10**7)
prices = st.decimals(min_value=0, max_value=100, places=6, allow_nan=False, allow_infinity=False)
SETTINGS = settings(max_examples=300, deadline=None, derandomize=True)


@st.composite
def usage(draw):
    """(endpoint, native usage, the canonical classes it bills)"""
    uncached, cached, write, visible, thinking = (draw(counts) for _ in range(5))
    endpoint = draw(st.sampled_from(["chat.completions", "responses", "messages"]))
    if endpoint == "chat.completions":
        native = {"prompt_tokens": uncached + cached + write, "completion_tokens": visible + thinking,
                  "prompt_tokens_details": {"cached_tokens": cached, "cache_write_tokens": write},
                  "completion_tokens_details": {"reasoning_tokens": thinking}}
    elif endpoint == "responses":
        native = {"input_tokens": uncached + cached + write, "output_tokens": visible + thinking,
                  "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": write},
                  "output_tokens_details": {"reasoning_tokens": thinking}}
    else:
        native = {"input_tokens": uncached, "cache_read_input_tokens": cached, "cache_creation_input_tokens": write,
                  "output_tokens": visible + thinking, "output_tokens_details": {"thinking_tokens": thinking}}
    return endpoint, native, (uncached, cached, write, visible, thinking)


@st.composite
def versions(draw):
    def price():
        return Price(draw(prices), draw(prices))

    optional = st.one_of(st.none(), st.builds(Price, prices, prices))
    return RateVersion(model="m", effective_from=NOW, input=price(), cached_input=price(), output=price(),
                       cache_write=draw(optional), thinking=draw(optional), web_search=draw(optional))


@SETTINGS
@given(usage())
def test_normalization_never_double_counts(case):
    endpoint, native, (uncached, cached, write, visible, thinking) = case
    rec = parse_record({**BASE, "endpoint": endpoint, "usage": native}, now=NOW)
    assert (rec.uncached_input_tokens, rec.cached_tokens, rec.cache_write_tokens) == (uncached, cached, write)
    assert rec.input_tokens == uncached + cached + write  # each prompt token in exactly one class
    assert (rec.output_tokens - rec.thinking_tokens, rec.thinking_tokens) == (visible, thinking)


@SETTINGS
@given(usage(), versions())
def test_canonical_and_native_forms_price_the_same(case, version):
    endpoint, native, (uncached, cached, write, visible, thinking) = case
    from_native = parse_record({**BASE, "endpoint": endpoint, "usage": native}, now=NOW)
    canonical = parse_record({**BASE, "endpoint": endpoint, "input_tokens": uncached + cached + write,
                              "cached_tokens": cached, "cache_write_tokens": write,
                              "output_tokens": visible + thinking, "thinking_tokens": thinking}, now=NOW)
    assert price_record(from_native, version) == price_record(canonical, version)


@SETTINGS
@given(usage(), versions(), st.sampled_from(["uncached", "cached", "write", "visible", "thinking", "web"]))
def test_cost_is_monotone_in_every_token_count(case, version, grow):
    _, _, classes = case
    uncached, cached, write, visible, thinking = classes

    def cost(u, c, w, v, t, web):
        rec = parse_record({**BASE, "input_tokens": u + c + w, "cached_tokens": c, "cache_write_tokens": w,
                            "output_tokens": v + t, "thinking_tokens": t, "web_search_requests": web}, now=NOW)
        unit = unit_prices(version, "current")
        assert total_pico(rec, unit) == breakdown(rec, unit).total
        return total_pico(rec, unit)

    args = dict(u=uncached, c=cached, w=write, v=visible, t=thinking, web=0)
    before = cost(**args)
    key = {"uncached": "u", "cached": "c", "write": "w", "visible": "v", "thinking": "t", "web": "web"}[grow]
    args[key] += 1
    assert cost(**args) >= before


@SETTINGS
@given(versions())
def test_unit_prices_are_exact_whole_picos(version):
    for basis in ("current", "list"):
        unit = unit_prices(version, basis)
        assert Decimal(unit.uncached_input).scaleb(-6) == getattr(version.input, basis)  # pico per token = USD per 1M
        assert Decimal(unit.output).scaleb(-6) == getattr(version.output, basis)
        assert Decimal(unit.thinking).scaleb(-6) == getattr(version.thinking or version.output, basis)
        assert all(isinstance(v, int) and v >= 0 for v in (unit.cached_input, unit.cache_write, unit.web_search))
