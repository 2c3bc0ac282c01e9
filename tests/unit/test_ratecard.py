"""The rate card file: the shipped seed, versions in effect, and errors that name the place."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from metering.errors import RateCardError
from metering.pricing import class_price
from metering.ratecard import load_rate_card
from metering.settings import DEFAULT_RATE_CARD
from metering.tokenclasses import BY_NAME

GOOD_VERSION = """
[[models.m.versions]]
effective_from = 2026-01-01T00:00:00Z
input        = { current = "0.15", list = "0.30" }
cached_input = { current = "0.03", list = "0.06" }
output       = { current = "0.60", list = "1.20" }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "card.toml"
    path.write_text(text)
    return path


def test_shipped_card_has_the_rate_page_prices():
    v = load_rate_card(DEFAULT_RATE_CARD).version_at("minimax-m2-7", datetime(2026, 11, 25, tzinfo=UTC))
    assert (v.input.current, v.input.list) == (Decimal("0.15"), Decimal("0.30"))
    assert (v.output.current, v.output.list) == (Decimal("0.60"), Decimal("1.20"))
    assert (v.cached_input.current, v.cached_input.list) == (Decimal("0.03"), Decimal("0.06"))
    assert v.thinking is None and v.cache_write is None and v.web_search is None
    assert class_price(v, BY_NAME["thinking"]) == v.output and class_price(v, BY_NAME["cache_write"]) == v.input


def test_version_in_effect_is_the_latest_started(tmp_path):
    later = GOOD_VERSION.replace("2026-01-01", "2026-06-01").replace('"0.15"', '"0.10"')
    card = load_rate_card(write(tmp_path, GOOD_VERSION + later))
    assert card.version_at("m", datetime(2025, 12, 31, 23, 59, tzinfo=UTC)) is None
    assert card.version_at("m", datetime(2026, 1, 1, tzinfo=UTC)).input.current == Decimal("0.15")
    assert card.version_at("m", datetime(2026, 5, 31, 23, 59, 59, tzinfo=UTC)).input.current == Decimal("0.15")
    assert card.version_at("m", datetime(2026, 6, 1, tzinfo=UTC)).input.current == Decimal("0.10")
    assert card.version_at("other", datetime(2026, 6, 1, tzinfo=UTC)) is None


@pytest.mark.parametrize(("mutate", "phrases"), [
    (lambda t: t.replace('current = "0.15"', "current = 0.15"), ["model 'm'", "'input'", "current", "decimal string"]),
    (lambda t: t.replace('"0.60"', '"-1"'), ["model 'm'", "'output'", "non-negative"]),
    (lambda t: t.replace('"0.03"', '"abc"'), ["model 'm'", "'cached_input'", "not a decimal"]),
    (lambda t: t.replace('"0.03"', '"0.0000001"'), ["model 'm'", "'cached_input'", "6 decimal places"]),
    (lambda t: t.replace(', list = "0.30"', ""), ["model 'm'", "'input'", "list", "required"]),
    (lambda t: t.replace("output       = { current = \"0.60\", list = \"1.20\" }\n", ""), ["model 'm'", "'output'",
                                                                                         "required"]),
    (lambda t: t.replace("2026-01-01T00:00:00Z", "2026-01-01T00:00:00"), ["model 'm'", "effective_from", "offset"]),
    (lambda t: t + 'colour = "red"\n', ["model 'm'", "unknown field 'colour'"]),
    (lambda t: t + t, ["model 'm'", "already has a version"]),
    (lambda t: t.replace("[[models.m.versions]]", "[[models.m.versions]\n"), ["not valid TOML"]),
])
def test_malformed_card_errors_name_the_file_model_and_field(tmp_path, mutate, phrases):
    path = write(tmp_path, mutate(GOOD_VERSION))
    with pytest.raises(RateCardError) as info:
        load_rate_card(path)
    assert str(path) in info.value.message
    for phrase in phrases:
        assert phrase in info.value.message


def test_missing_card_file_is_named(tmp_path):
    with pytest.raises(RateCardError, match="not found"):
        load_rate_card(tmp_path / "nope.toml")
