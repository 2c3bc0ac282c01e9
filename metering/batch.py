"""Records in bulk: the ingest fast path, a column at a time.

`records.parse_record` checks one record in Python (about 15 us each). A batch of canonical
records is checked here a column at a time instead: the type of every value with one set over
the column, ranges, lengths, cross-field rules and the future-time rule with Arrow compute, the
timestamps with one Arrow cast behind a strict RFC 3339 pattern. The result is a table in the
canonical Arrow schema, which the writer inserts and prices in one SQL statement.

The fast path never decides that a record is wrong and never words an error: a record that
fails any fast check, or uses a native `usage` shape, is handed to `parse_record`, which accepts
it or names the field. So the two paths agree by construction on what is rejected and why, and a
property test checks that they store the same values for what is accepted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from metering.errors import RecordError
from metering.records import (
    CANONICAL_FIELDS,
    EARLIEST,
    ENDPOINTS,
    FUTURE_TOLERANCE,
    MAX_STRING,
    MAX_TAG_KEY,
    MAX_TAG_VALUE,
    MAX_TAGS,
    MAX_TOKENS,
    TOKEN_FIELDS,
    UsageRecord,
    check_tags,
    epoch_micros,
    parse_timestamp,
)

TAGS_TYPE = pa.map_(pa.string(), pa.string())
CANONICAL_SCHEMA = pa.schema([
    ("request_id", pa.string()),
    ("occurred_at", pa.timestamp("us")),  # UTC
    ("api_key_id", pa.string()),
    ("model", pa.string()),
    ("endpoint", pa.string()),
    *((name, pa.int32()) for name in TOKEN_FIELDS),
    ("tags", TAGS_TYPE),
])
STRING_FIELDS = ("request_id", "api_key_id", "model")
REQUIRED = frozenset({"request_id", "occurred_at", "api_key_id", "model", "input_tokens", "output_tokens"})
OPTIONAL_COUNTS = ("cached_tokens", "cache_write_tokens", "web_search_requests")  # absent or null: 0
# The timestamps the Arrow cast reads exactly as `parse_timestamp` does; any other form (lower-case
# separators, more than 6 fractional digits, surrounding spaces, ...) goes to parse_timestamp.
RFC3339 = (r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,6})?"
           r"(Z|[+-]([01]\d|2[0-3]):[0-5]\d)$")
_INT = frozenset({int})
_INT_OR_NULL = frozenset({int, type(None)})
_STR = frozenset({str})
_STR_OR_NULL = frozenset({str, type(None)})
_DICT_OR_NULL = frozenset({dict, type(None)})


@dataclass
class Split:
    """A body's records: those the column checks accepted, as a canonical table, and the rest."""

    table: pa.Table
    positions: list[int]  # the body index of each row of `table`
    slow: list[int] = field(default_factory=list)  # body indexes parse_record must look at


def records_table(records: Sequence[UsageRecord]) -> pa.Table:
    """Parsed records -> the canonical table."""
    columns: dict[str, pa.Array] = {
        "request_id": pa.array([r.request_id for r in records], pa.string()),
        "occurred_at": pa.array([epoch_micros(r.occurred_at) for r in records], pa.int64()).cast(pa.timestamp("us")),
        "api_key_id": pa.array([r.api_key_id for r in records], pa.string()),
        "model": pa.array([r.model for r in records], pa.string()),
        "endpoint": pa.array([r.endpoint for r in records], pa.string()),
    }
    for name in TOKEN_FIELDS:
        columns[name] = pa.array([getattr(r, name) for r in records], pa.int32())
    columns["tags"] = pa.array([r.tags for r in records], TAGS_TYPE)
    return pa.Table.from_pydict(columns, schema=CANONICAL_SCHEMA)


def _typed(values: list[Any], allowed: frozenset, bad: bytearray) -> list[Any]:
    """Mark the values of another type (bool is not int here: type(), not isinstance) and blank them."""
    if set(map(type, values)) <= allowed:
        return values
    out = list(values)
    for j, value in enumerate(out):
        if type(value) not in allowed:
            bad[j] = 1
            out[j] = None
    return out


def _ints(values: list[Any], bad: bytearray) -> pa.Array:
    try:
        return pa.array(values, pa.int64())
    except OverflowError:  # beyond 64 bits: out of range for parse_record too
        out = list(values)
        for j, value in enumerate(out):
            if value is not None and not 0 <= value <= MAX_TOKENS:
                bad[j] = 1
                out[j] = None
        return pa.array(out, pa.int64())


def _strings(values: list[Any], bad: bytearray) -> pa.Array:
    try:
        return pa.array(values, pa.string())
    except (UnicodeEncodeError, pa.ArrowException):  # e.g. a lone surrogate: parse_record decides
        for j in range(len(values)):
            bad[j] = 1
        return pa.nulls(len(values), pa.string())


def _tags(values: list[Any], bad: bytearray) -> pa.Array:
    """Tag objects -> a map column; the rules of records._tags checked over all entries at once."""
    values = _typed(values, _DICT_OR_NULL, bad)
    try:
        tags = pa.array(values, TAGS_TYPE)
    except (pa.ArrowException, UnicodeEncodeError):  # a value that is not a string: checked one by one
        values = list(values)
        for j, value in enumerate(values):
            if value is not None:
                try:
                    check_tags(value)
                except RecordError:
                    bad[j] = 1
                    values[j] = None
        tags = pa.array(values, TAGS_TYPE)
    return _checked_tags(tags, bad)


def _checked_tags(tags: pa.Array, bad: bytearray) -> pa.Array:
    if tags.null_count == len(tags):
        return tags
    entries = pa.ListArray.from_arrays(tags.offsets, tags.keys)  # list kernels do not take maps
    keys, items = pc.utf8_length(tags.keys), tags.items
    entry_ok = pc.and_kleene(pc.and_kleene(pc.greater_equal(keys, 1), pc.less_equal(keys, MAX_TAG_KEY)),
                             pc.less_equal(pc.utf8_length(items), MAX_TAG_VALUE))
    entry_ok = pc.fill_null(entry_ok, False)  # a null value
    if not pc.all(entry_ok).as_py():
        for j in set(pc.filter(pc.list_parent_indices(entries), pc.invert(entry_ok)).to_pylist()):
            bad[j] = 1
    counts = pc.list_value_length(entries)
    for j in pc.indices_nonzero(pc.fill_null(pc.greater(counts, MAX_TAGS), False)).to_pylist():
        bad[j] = 1
    empty = pc.fill_null(pc.equal(counts, 0), False)
    if pc.any(empty).as_py():  # {} is stored as no tags, as parse_record does
        tags = pc.if_else(empty, pa.scalar(None, TAGS_TYPE), tags)
    return tags


def _parse_each(values: list[Any]) -> list[int | None]:
    out: list[int | None] = []
    for value in values:
        try:
            out.append(epoch_micros(parse_timestamp(value)))
        except RecordError:
            out.append(None)
    return out


def _timestamps(values: list[Any], now: datetime) -> tuple[pa.Array, pa.Array]:
    """Strings -> (UTC microseconds, accepted mask)."""
    text = pa.array(values, pa.string())
    ok = pc.fill_null(pc.match_substring_regex(text, RFC3339), False)
    try:
        micros = pc.cast(pc.if_else(ok, text, pa.scalar(None, pa.string())), pa.timestamp("us", tz="UTC"))
        micros = micros.cast(pa.int64())
    except pa.ArrowInvalid:  # an impossible date such as Feb 30 somewhere: parse_timestamp reads each
        micros = pa.array(_parse_each([v if keep else None for v, keep in zip(values, ok.to_pylist(), strict=True)]),
                          pa.int64())
        ok = pc.is_valid(micros)
    return micros.cast(pa.timestamp("us")), pc.and_kleene(ok, _in_window(micros, now))


def _in_window(micros: pa.Array, now: datetime) -> pa.Array:
    """The record's time window (records.check_occurred_at) over a column of UTC microseconds."""
    late = pc.less_equal(micros, epoch_micros(now + FUTURE_TOLERANCE))
    return pc.fill_null(pc.and_kleene(pc.greater_equal(micros, epoch_micros(EARLIEST)), late), False)


def split_items(items: Sequence[Any], *, now: datetime) -> Split:
    """Check canonical records a column at a time; leave the rest to parse_record."""
    if set(map(type, items)) == {dict} and set().union(*items) <= CANONICAL_FIELDS:
        candidates = list(range(len(items)))  # the usual body: canonical records only
    else:
        candidates = [i for i, item in enumerate(items) if type(item) is dict and item.keys() <= CANONICAL_FIELDS]
    if not candidates:
        return Split(CANONICAL_SCHEMA.empty_table(), [], list(range(len(items))))
    rows = items if len(candidates) == len(items) else [items[i] for i in candidates]
    n = len(rows)
    bad = bytearray(n)
    columns: dict[str, pa.Array] = {}
    for name in STRING_FIELDS:
        columns[name] = _strings(_typed([r.get(name) for r in rows], _STR, bad), bad)
    columns["endpoint"] = _strings(_typed([r.get("endpoint") for r in rows], _STR_OR_NULL, bad), bad)
    for name in TOKEN_FIELDS:
        allowed = _INT if name in REQUIRED else _INT_OR_NULL
        columns[name] = _ints(_typed([r.get(name) for r in rows], allowed, bad), bad)
    stamps = _typed([r.get("occurred_at") for r in rows], _STR, bad)
    columns["tags"] = _tags([r.get("tags") for r in rows], bad)
    columns["occurred_at"], ok = _timestamps(stamps, now)
    return _finish(columns, ok, bad, candidates, len(items))


def split_table(table: pa.Table, *, now: datetime) -> Split | None:
    """The same checks on a typed table (a Parquet file's rows); None when its columns are not the
    canonical ones with types that say what the JSON types say (then the caller goes row by row)."""
    names = set(table.column_names)
    if not names <= CANONICAL_FIELDS or not names >= REQUIRED:
        return None
    n = table.num_rows
    columns: dict[str, pa.Array] = {}
    for name in (*STRING_FIELDS, "endpoint"):
        column = table[name].combine_chunks() if name in names else pa.nulls(n, pa.string())
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type) or pa.types.is_null(column.type)):
            return None
        columns[name] = column.cast(pa.string())
    for name in TOKEN_FIELDS:
        column = table[name].combine_chunks() if name in names else pa.nulls(n, pa.int64())
        if not (pa.types.is_integer(column.type) or pa.types.is_null(column.type)):
            return None
        if pa.types.is_uint64(column.type) and (pc.max(column).as_py() or 0) >= 2**63:
            return None
        columns[name] = column.cast(pa.int64())
        if name in REQUIRED and column.null_count:
            return None
    tags = table["tags"].combine_chunks() if "tags" in names else pa.nulls(n, TAGS_TYPE)
    if pa.types.is_null(tags.type):
        tags = pa.nulls(n, TAGS_TYPE)
    if tags.type != TAGS_TYPE:
        return None
    bad = bytearray(n)
    columns["tags"] = _checked_tags(tags, bad)
    stamps = table["occurred_at"].combine_chunks()
    if pa.types.is_string(stamps.type) or pa.types.is_large_string(stamps.type):
        columns["occurred_at"], ok = _timestamps(stamps.cast(pa.string()), now)
    elif pa.types.is_timestamp(stamps.type) and stamps.type.tz is not None:  # an instant: any zone will do
        micros = stamps.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
        ok = _in_window(micros, now)
        columns["occurred_at"] = micros.cast(pa.timestamp("us"))
    else:  # a timestamp without a zone is ambiguous: parse_record words the error
        return None
    return _finish(columns, ok, bad, list(range(n)), n)


def _finish(columns: dict[str, pa.Array], ok: pa.Array, bad: bytearray, candidates: list[int], total: int) -> Split:
    """Every rule checked over whole columns -> the split of the body."""
    n = len(candidates)
    checks = [ok]
    for name in STRING_FIELDS:
        length = pc.utf8_length(columns[name])
        checks.append(pc.and_kleene(pc.greater_equal(length, 1), pc.less_equal(length, MAX_STRING)))
    checks.append(pc.or_kleene(pc.is_null(columns["endpoint"]), pc.is_in(columns["endpoint"], pa.array(ENDPOINTS))))
    for name in OPTIONAL_COUNTS:
        columns[name] = pc.fill_null(columns[name], 0)
    for name in TOKEN_FIELDS:
        column = columns[name]
        checks.append(pc.or_kleene(pc.is_null(column),
                                   pc.and_kleene(pc.greater_equal(column, 0), pc.less_equal(column, MAX_TOKENS))))
    cache = pc.add(columns["cached_tokens"], columns["cache_write_tokens"])
    checks.append(pc.less_equal(cache, columns["input_tokens"]))
    thinking = columns["thinking_tokens"]
    checks.append(pc.or_kleene(pc.is_null(thinking), pc.less_equal(thinking, columns["output_tokens"])))
    good = pa.array([not b for b in bad], pa.bool_()) if any(bad) else None
    for check in checks:
        check = pc.fill_null(check, False)
        good = check if good is None else pc.and_kleene(good, check)

    table = pa.table({name: columns[name] for name in CANONICAL_SCHEMA.names})
    if pc.all(good).as_py():
        slow = [] if n == total else sorted(set(range(total)) - set(candidates))
        return Split(_conform(table), list(candidates), slow)
    keep = good.to_pylist()
    positions = [candidates[j] for j in range(n) if keep[j]]
    return Split(_conform(table.filter(good)), positions, sorted(set(range(total)) - set(positions)))


def _conform(table: pa.Table) -> pa.Table:
    """The checked columns (counts as int64 until their range is known) -> the canonical types."""
    return pa.Table.from_arrays([table[f.name].cast(f.type) for f in CANONICAL_SCHEMA], schema=CANONICAL_SCHEMA)
