"""One table of token classes; every price expression derived from it gives the same integers.

Random records are priced in Python (the breakdown and the folded fast total), in DuckDB SQL (the
expression the store prices with at ingest and when re-rating) and in Polars (the report engine's
form); each class's cost and the total must be identical, to the pico-dollar.
"""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metering.pricing import MAX_COST_PICO, Breakdown, CostOverflow, breakdown, total_pico, unit_prices, units_table
from metering.ratecard import RateCard
from metering.records import UsageRecord
from metering.tokenclasses import CLASS_NAMES, TOKEN_CLASSES, linear, quantities, sql_cost, sql_quantity, unit_column
from tests.unit.test_properties import versions

counts = st.integers(min_value=0, max_value=2**31 - 1)


@st.composite
def records(draw) -> UsageRecord:
    input_tokens = draw(counts)
    cached = draw(st.integers(0, input_tokens))
    write = draw(st.integers(0, input_tokens - cached))
    output = draw(counts)
    thinking = draw(st.one_of(st.none(), st.integers(0, output)))
    return UsageRecord(request_id="r", occurred_at=datetime(2026, 1, 1, tzinfo=UTC), api_key_id="k", model="m",
                       endpoint=None, input_tokens=input_tokens, cached_tokens=cached, cache_write_tokens=write,
                       output_tokens=output, thinking_tokens=thinking, web_search_requests=draw(counts), tags=None)


def unchecked(record: UsageRecord, unit) -> Breakdown:
    amounts = quantities(lambda f: getattr(record, f))
    return Breakdown(*(amounts[name] * price for name, price in zip(CLASS_NAMES, unit, strict=True)))


FIELDS = ("input_tokens", "cached_tokens", "cache_write_tokens", "output_tokens", "thinking_tokens",
          "web_search_requests")


def table(rows: list[UsageRecord]) -> pa.Table:
    return pa.table({f: pa.array([getattr(r, f) for r in rows], pa.int64()) for f in FIELDS})


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(records(), min_size=1, max_size=20), versions())
def test_python_sql_and_polars_price_every_record_to_the_same_integers(rows, version):
    card = RateCard()
    card.add(version.__class__(**{**{f: getattr(version, f) for f in version.__dataclass_fields__}, "id": 1}))
    stored = card.all_versions()[0]
    units = units_table(card)
    con = duckdb.connect()
    con.register("l", table(rows))
    con.register("v", units)
    for basis, short in (("current", "cur"), ("list", "list")):
        unit = unit_prices(stored, basis)
        python = [unchecked(r, unit) for r in rows]
        for r, b in zip(rows, python, strict=True):
            if b.total > MAX_COST_PICO:  # both Python forms refuse it; the store leaves such a record out
                with pytest.raises(CostOverflow):
                    total_pico(r, unit)
            else:
                assert total_pico(r, unit) == b.total == breakdown(r, unit).total

        per_class_sql = ", ".join(
            f"({sql_quantity(c, 'l', cast='HUGEINT')} * v.{unit_column(short, c)})::VARCHAR" for c in TOKEN_CLASSES)
        sql = con.execute(f"SELECT {per_class_sql}, ({sql_cost(short)})::VARCHAR FROM l, v").fetchall()
        assert [tuple(int(x) for x in row[:-1]) for row in sql] == [tuple(b) for b in python]
        assert [int(row[-1]) for row in sql] == [b.total for b in python]

        frame = pl.from_arrow(table(rows)).with_columns(pl.all().cast(pl.Int128))
        priced = frame.select(
            (linear(c.terms, lambda f: pl.col(f).fill_null(0)) * price).alias(c.name)
            for c, price in zip(TOKEN_CLASSES, unit, strict=True))
        assert [tuple(row) for row in priced.select(CLASS_NAMES).rows()] == [tuple(b) for b in python]
    con.close()


def test_the_classes_partition_a_record():
    """Every prompt and output token is in exactly one class (a quantity per field sums to 1)."""
    rec = {"input_tokens": 1000, "cached_tokens": 300, "cache_write_tokens": 200, "output_tokens": 500,
           "thinking_tokens": 120, "web_search_requests": 2}
    q = quantities(rec.get)
    assert q == {"uncached_input": 500, "cached_input": 300, "cache_write": 200, "output": 380, "thinking": 120,
                 "web_search": 2}
    assert q["uncached_input"] + q["cached_input"] + q["cache_write"] == rec["input_tokens"]
    assert q["output"] + q["thinking"] == rec["output_tokens"]
    assert quantities({**rec, "thinking_tokens": None}.get)["output"] == 500  # unknown thinking: all output


@settings(max_examples=6, deadline=None, derandomize=True)
@given(st.lists(records(), min_size=1, max_size=40), versions())
def test_the_spark_form_prices_every_record_to_the_same_integers(spark, rows, version):
    """The lake's report engine (metering.lake) derives its quantities from the same table: one Spark
    job per example prices every record per class, exactly, in DECIMAL(38, 0)."""
    from pyspark.sql.types import LongType, StructField, StructType

    from metering.lake._spark import class_cost

    card = RateCard()
    card.add(version.__class__(**{**{f: getattr(version, f) for f in version.__dataclass_fields__}, "id": 1}))
    stored = card.all_versions()[0]
    frame = spark.createDataFrame([tuple(getattr(r, f) for f in FIELDS) for r in rows],
                                  StructType([StructField(f, LongType()) for f in FIELDS]))
    units = {basis: unit_prices(stored, basis) for basis in ("current", "list")}
    columns = [class_cost(c, unit[i]).alias(f"{basis}_{c.name}")
               for basis, unit in units.items() for i, c in enumerate(TOKEN_CLASSES)]
    priced = frame.select(*columns).collect()
    for basis, unit in units.items():
        python = [tuple(unchecked(r, unit)) for r in rows]
        assert [tuple(int(row[f"{basis}_{c.name}"]) for c in TOKEN_CLASSES) for row in priced] == python
