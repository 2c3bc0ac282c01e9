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


SPELLINGS = ["m", "M-1.0", "vendor/M-1.0", "m-1.0"]  # the model, then aliases of it


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(st.tuples(records(), st.sampled_from([*SPELLINGS, "M-1.0-X", "VENDOR/M-1.0", "other"]),
                          st.sampled_from([datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC),
                                           datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC)])),
                min_size=1, max_size=20),
       versions(), versions(), st.integers(0, len(SPELLINGS) - 1))
def test_an_alias_is_priced_alike_in_python_and_in_the_sql_asof_join(rows, first, second, n_aliases):
    """The ingest paths agree on aliases: `RateCard.version_at` (small bodies, priced in Python) and the
    ASOF join on `units_table` (large bodies in the INSERT, and re-rating) find the same version for
    every model id, an alias or not, at every time, and price it to the same integers (issue 14)."""
    card = RateCard()
    for i, (version, at) in enumerate(((first, datetime(2026, 1, 1, tzinfo=UTC)),
                                       (second, datetime(2026, 6, 1, tzinfo=UTC))), start=1):
        card.add(version.__class__(**{**{f: getattr(version, f) for f in version.__dataclass_fields__},
                                      "id": i, "effective_from": at}))
    for alias in SPELLINGS[1:1 + n_aliases]:
        assert card.add_alias(alias, "m")
    records_ = [r.__class__(**{**{f: getattr(r, f) for f in r.__dataclass_fields__}, "model": model, "occurred_at": at})
                for r, model, at in rows]
    python = []
    for r in records_:
        version = card.version_at(r.model, r.occurred_at)
        if version is None:
            python.append((None, None))
            continue
        unit = unit_prices(version, "current")
        total = unchecked(r, unit).total
        python.append((version.id, total if total <= MAX_COST_PICO else "overflow"))
    con = duckdb.connect()
    con.register("l", table(records_).append_column("model", pa.array([r.model for r in records_]))
                 .append_column("occurred_at", pa.array([r.occurred_at.replace(tzinfo=None) for r in records_],
                                                        pa.timestamp("us")))
                 .append_column("i", pa.array(range(len(records_)))))
    con.register("v", units_table(card))
    sql = con.execute(f"""
        SELECT v.version_id, CASE WHEN v.version_id IS NOT NULL THEN ({sql_cost('cur')})::VARCHAR END
        FROM l ASOF LEFT JOIN v ON l.model = v.model AND l.occurred_at >= v.effective_from ORDER BY l.i
    """).fetchall()  # the join of store.writer.PRICED and store.reprice.REPRICED
    con.close()
    assert [(vid, None if cost is None else int(cost) if int(cost) <= MAX_COST_PICO else "overflow")
            for vid, cost in sql] == python
    assert all(p[0] is None for p, r in zip(python, records_, strict=True)
               if r.model not in ("m", *SPELLINGS[1:1 + n_aliases]))  # exact match only: no other id is priced
