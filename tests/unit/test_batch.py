"""The column-at-a-time ingest path (metering.batch) against parse_record, one record at a time.

The fast path may only accept what parse_record accepts, store the same values, and leave
every rejection (and its wording) to parse_record. Bodies are generated with Hypothesis from
valid records broken in one field each, in every way the contract names.
"""

from __future__ import annotations

from datetime import timedelta

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from metering.batch import CANONICAL_SCHEMA, records_table, split_items
from metering.errors import RecordError
from metering.records import parse_record
from metering.services.ingest import FAST_PATH_MIN, parse_items
from tests.conftest import NOW, generate_records

VALID = generate_records(200, seed=7, prefix="b")
FIELD_VALUES = {
    "request_id": [None, "", "x" * 201, "x" * 200, 5, "\u00e9" * 200, True],
    "api_key_id": [None, "", 3.5, "k" * 201, ["k"]],
    "model": [None, "", {"m": 1}, "m" * 200],
    "endpoint": [None, "chat.completions", "messages", "bogus", 1, ""],
    "input_tokens": [None, -1, 0, 1.0, True, "12", 2**31 - 1, 2**31, 2**64, 10**30],
    "cached_tokens": [None, -5, 0, 10**12, False, 1.5],
    "cache_write_tokens": [None, 7, -1, "3"],
    "output_tokens": [None, 0, -1, 2**31, 2.0],
    "thinking_tokens": [None, 0, 10**9, -1, True],
    "web_search_requests": [None, 0, 3, -1, 2**40],
    "occurred_at": [
        None, 12, "", "2026-11-20T10:00:00Z", "2026-11-20T10:00:00.123456+05:30", "2026-11-20T10:00:00.1234567Z",
        "2026-11-20t10:00:00z", " 2026-11-20T10:00:00Z", "2026-11-20 10:00:00+00:00", "2026-02-30T00:00:00Z",
        "2026-11-20T10:00:00", "2026-11-20", "2026-11-20T24:00:00Z", "2026-11-20T10:00:00+24:00",
        (NOW + timedelta(minutes=4)).isoformat(), (NOW + timedelta(minutes=6)).isoformat(), "1969-12-31T23:59:59Z",
    ],
    "tags": [None, {}, {"a": "1"}, {"a": None}, {"": "x"}, {"k" * 65: "v"}, {"k": "v" * 257}, {"k": 1},
             {f"t{i}": "v" for i in range(21)}, {f"t{i}": "v" for i in range(20)}, ["a"], "tags", {"b": "2", "a": "1"}],
    "unknown": ["extra"],
    "usage": [{"prompt_tokens": 10, "completion_tokens": 5}, {"prompt_tokens": -1, "completion_tokens": 5}],
}


@st.composite
def bodies(draw):
    size = draw(st.integers(min_value=FAST_PATH_MIN, max_value=80))
    items = []
    for i in range(size):
        item = dict(VALID[draw(st.integers(0, len(VALID) - 1))])
        item["request_id"] = f"r{i}"
        if draw(st.integers(0, 3)) == 0:  # about one record in four is broken, in one field
            name = draw(st.sampled_from(sorted(FIELD_VALUES)))
            value = draw(st.sampled_from(FIELD_VALUES[name]))
            if draw(st.booleans()) and name != "unknown":
                item.pop(name, None)
            elif name == "usage":
                item = {k: v for k, v in item.items() if k not in CANONICAL_TOKENS}
                item.update(usage=value, endpoint="chat.completions")
            else:
                item[name] = value
        if draw(st.integers(0, 20)) == 0:
            item = draw(st.sampled_from([None, 1, "record", [item]]))
        items.append(item)
    return items


CANONICAL_TOKENS = {"input_tokens", "cached_tokens", "cache_write_tokens", "output_tokens", "thinking_tokens",
                    "web_search_requests"}


def one_by_one(items):
    accepted, errors = [], []
    for index, item in enumerate(items):
        try:
            accepted.append((index, parse_record(item, now=NOW)))
        except RecordError as exc:
            errors.append((index, exc.field, exc.message))
    return accepted, errors


@settings(max_examples=250, deadline=None, derandomize=True)
@given(bodies())
def test_the_column_path_accepts_and_stores_exactly_what_parse_record_does(items):
    parsed = parse_items(items, now=NOW)
    accepted, errors = one_by_one(items)
    assert [(e["index"], e.get("field"), e["error"]) for e in sorted(parsed.errors, key=lambda e: e["index"])] == errors
    assert parsed.positions == [index for index, _ in accepted]
    expected = records_table([record for _, record in accepted])
    if not accepted:
        assert parsed.count == 0
        return
    assert parsed.table is not None and parsed.table.schema == CANONICAL_SCHEMA
    assert parsed.table.to_pylist() == expected.to_pylist()


def test_a_clean_body_takes_the_fast_path_for_every_record():
    items = [dict(r) for r in VALID[:100]]
    split = split_items(items, now=NOW)
    assert split.slow == [] and split.positions == list(range(100))
    assert split.table.to_pylist() == records_table([parse_record(r, now=NOW) for r in items]).to_pylist()


def test_one_impossible_date_does_not_send_the_rest_of_the_body_the_slow_way():
    items = [dict(r) for r in VALID[:50]]
    items[7] = dict(items[7], occurred_at="2026-02-30T00:00:00Z")
    split = split_items(items, now=NOW)
    assert split.slow == [7] and len(split.positions) == 49


def test_empty_tags_are_stored_as_no_tags_and_tag_order_is_kept_as_given():
    items = [dict(r, tags={}) for r in VALID[:40]] + [dict(VALID[40], tags={"b": "2", "a": "1"})]
    table = split_items(items, now=NOW).table
    assert table["tags"].null_count == 40
    assert table["tags"][40].as_py() == [("b", "2"), ("a", "1")]
    assert isinstance(table["tags"].type, pa.MapType)
