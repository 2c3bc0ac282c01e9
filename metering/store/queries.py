"""Read queries over the ledger and its rollup. Column names come from allow-lists; values
are bound parameters."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb
import pyarrow as pa

from metering.access import UNASSIGNED
from metering.errors import BadRequest
from metering.records import epoch_micros
from metering.timewindows import aligned, naive_utc
from metering.tokenclasses import TOKEN_CLASSES, sql_quantity

ROLLUP_SECONDS = 15 * 60
GROUP_FIELDS = ("model", "endpoint", "api_key_id", "account_id")
MAX_GROUP_FIELDS = 8
ISO = "%Y-%m-%dT%H:%M:%SZ"  # timestamps formatted by DuckDB: any year it holds
ISO_MICROS = "%Y-%m-%dT%H:%M:%S.%fZ"
TAG_NAME = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")
COUNT_FIELDS = (
    "requests",
    "input_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "output_tokens",
    "thinking_tokens",
    "web_search_requests",
    "unpriced_requests",
)

# In the order of COUNT_FIELDS, then cost and list cost.
_ROLLUP_MEASURES = (
    "sum(requests)", "sum(input_tokens)", "sum(cached_tokens)", "sum(cache_write_tokens)",
    "sum(output_tokens)", "sum(thinking_tokens)", "sum(web_search_requests)", "sum(unpriced_requests)",
    "sum(cost_pico)", "sum(list_cost_pico)",
)
_LEDGER_MEASURES = (
    "count(*)", "sum(input_tokens)", "sum(cached_tokens)", "sum(cache_write_tokens)",
    "sum(output_tokens)", "coalesce(sum(thinking_tokens), 0)", "sum(web_search_requests)",
    "count(*) FILTER (WHERE rate_version_id IS NULL)",
    "coalesce(sum(cost_pico), 0)", "coalesce(sum(list_cost_pico), 0)",
)


@dataclass(frozen=True, slots=True)
class GroupBy:
    fields: tuple[str, ...]  # output names: model, endpoint, api_key_id, tag:NAME

    @classmethod
    def parse(cls, text: str | None) -> GroupBy:
        """A comma list of at most MAX_GROUP_FIELDS names from the allow-list (tag:NAME with NAME of
        letters, digits and _.:-); anything else is a 400 naming group_by."""
        if not text:
            return cls(())
        names = [raw.strip() for raw in text.split(",", MAX_GROUP_FIELDS + 1)]
        if len(names) > MAX_GROUP_FIELDS:
            raise BadRequest(f"group_by: at most {MAX_GROUP_FIELDS} fields")
        fields: list[str] = []
        for name in names:
            if name in GROUP_FIELDS or (name.startswith("tag:") and TAG_NAME.match(name[4:])):
                if name not in fields:
                    fields.append(name)
            else:
                raise BadRequest(
                    f"group_by: unknown field {name[:80]!r} (allowed: {', '.join(GROUP_FIELDS)}, tag:NAME "
                    "with NAME of letters, digits and _.:-)"
                )
        return cls(tuple(fields))

    @property
    def needs_ledger(self) -> bool:
        return any(f.startswith("tag:") for f in self.fields)


@contextlib.contextmanager
def _registered(cur: duckdb.DuckDBPyConnection, tables: dict[str, pa.Table]) -> Iterator[None]:
    for name, table in tables.items():
        cur.register(name, table)
    try:
        yield
    finally:
        for name in tables:
            cur.unregister(name)


@dataclass(frozen=True, slots=True)
class Row:
    bucket: int
    group: dict[str, Any]
    counts: dict[str, int]
    cost_pico: int
    list_cost_pico: int


def live_rollup(cur: duckdb.DuckDBPyConnection) -> str:
    """The live rollup (rolled-up cells plus the ledger's unrolled tail) as a FROM item. Call it in
    the same transaction as the query that uses it (Store.reading() opens one), so the watermark
    and the tables it splits agree."""
    (watermark,) = cur.execute("SELECT watermark FROM rollup_state").fetchall()[0]
    return f"usage_rollup_at({int(watermark)})"


def bucket_table(buckets: list[tuple[datetime, datetime]]) -> pa.Table:
    return pa.table({
        "idx": pa.array(range(len(buckets)), pa.int32()),
        "bucket_start": pa.array([epoch_micros(b[0]) for b in buckets], pa.int64()).cast(pa.timestamp("us")),
    })


MAX_SLOTS = 2_000_000


def slot_table(buckets: list[tuple[datetime, datetime]]) -> pa.Table | None:
    """Every 15-minute rollup slot of every bucket, so the rollup joins its bucket by equality.
    None when the range is too long for that (the query then uses an as-of join)."""
    step = ROLLUP_SECONDS * 1_000_000
    first, last = epoch_micros(buckets[0][0]), epoch_micros(buckets[-1][1])
    if (last - first) // step > MAX_SLOTS:
        return None
    slots: list[int] = []
    idx: list[int] = []
    for i, (b_start, b_end) in enumerate(buckets):
        lo, hi = epoch_micros(b_start), epoch_micros(b_end)
        slots.extend(range(lo, hi, step))
        idx.extend([i] * ((hi - lo) // step))
    return pa.table({"idx": pa.array(idx, pa.int32()),
                     "slot": pa.array(slots, pa.int64()).cast(pa.timestamp("us"))})


def _usage_sql(
    buckets: list[tuple[datetime, datetime]], group_by: GroupBy, api_key_id: str | None, account_id: str | None,
    force_ledger: bool, live: str,
) -> tuple[str, dict[str, Any], dict[str, pa.Table]]:
    """SQL summing usage per bucket (`idx`) and group (`g0`, `g1`, ...), and the tables it needs
    registered. Uses the 15-minute rollup when every bucket boundary falls on a rollup boundary
    and no tag is grouped; otherwise (or with force_ledger) scans the ledger. Sums per key first,
    then joins the keys for accounts, so the join sees few rows."""
    boundaries = [b[0] for b in buckets] + [buckets[-1][1]]
    use_rollup = not force_ledger and not group_by.needs_ledger and aligned(boundaries, ROLLUP_SECONDS)
    slots = slot_table(buckets) if use_rollup else None
    ts, source, measures = (
        ("bucket_start", live, _ROLLUP_MEASURES) if use_rollup
        else ("occurred_at", "ledger", _LEDGER_MEASURES)
    )
    tables = {"usage_slots": slots} if slots is not None else {"usage_buckets": bucket_table(buckets)}
    join = ("JOIN usage_slots b ON r.bucket_start = b.slot" if slots is not None
            else f"ASOF JOIN usage_buckets b ON r.{ts} >= b.bucket_start")
    params: dict[str, Any] = {"start": naive_utc(boundaries[0]), "end": naive_utc(boundaries[-1])}
    inner, outer = [], []
    for i, name in enumerate(group_by.fields):
        if name.startswith("tag:"):
            params[f"tag{i}"] = name[4:]
            inner.append(f"r.tags[$tag{i}] AS g{i}")
        elif name == "endpoint" and use_rollup:
            inner.append(f"nullif(r.endpoint, '') AS g{i}")
        elif name == "account_id":
            outer.append(f"coalesce(k.account_id, '{UNASSIGNED}') AS g{i}")
            continue
        else:
            inner.append(f"r.{name} AS g{i}")  # name is from GROUP_FIELDS
        outer.append(f"q.g{i}")
    filters = ""
    if api_key_id is not None:
        filters += " AND r.api_key_id = $key"
        params["key"] = api_key_id
    account_filter = ""
    if account_id is not None:
        account_filter = f"WHERE coalesce(k.account_id, '{UNASSIGNED}') = $account"
        params["account"] = account_id
    n = len(measures)
    inner_cols = "".join(f", {c}" for c in inner)
    inner_groups = "".join(f", g{i}" for i, name in enumerate(group_by.fields) if name != "account_id")
    group_cols = "".join(f", g{i}" for i in range(len(group_by.fields)))
    sql = f"""
        SELECT q.idx{''.join(', ' + c for c in outer)}, {', '.join(f'sum(q.m{j})' for j in range(n))}
        FROM (
            SELECT b.idx, r.api_key_id AS key_id{inner_cols},
                   {', '.join(f'{m} AS m{j}' for j, m in enumerate(measures))}
            FROM {source} r {join}
            WHERE r.{ts} >= $start AND r.{ts} < $end {filters}
            GROUP BY b.idx, r.api_key_id{inner_groups}
        ) q
        LEFT JOIN api_keys k ON k.api_key_id = q.key_id
        {account_filter}
        GROUP BY q.idx{group_cols}
        ORDER BY q.idx{group_cols}
    """  # noqa: S608 (identifiers from allow-lists; values bound)
    return sql, params, tables


def usage(
    cur: duckdb.DuckDBPyConnection,
    *,
    buckets: list[tuple[datetime, datetime]],
    group_by: GroupBy,
    api_key_id: str | None,
    account_id: str | None = None,
    force_ledger: bool = False,
) -> list[Row]:
    """Sums per bucket and group, as Python rows (for the JSON API)."""
    sql, params, tables = _usage_sql(buckets, group_by, api_key_id, account_id, force_ledger, live_rollup(cur))
    with _registered(cur, tables):
        rows = cur.execute(sql, params).fetchall()
    n = len(group_by.fields)
    out = []
    for row in rows:
        counts = dict(zip(COUNT_FIELDS, (int(v or 0) for v in row[1 + n:1 + n + len(COUNT_FIELDS)]), strict=True))
        out.append(Row(
            bucket=row[0],
            group=dict(zip(group_by.fields, row[1:1 + n], strict=True)),
            counts=counts,
            cost_pico=int(row[-2] or 0),
            list_cost_pico=int(row[-1] or 0),
        ))
    return out


def usage_arrow(
    cur: duckdb.DuckDBPyConnection,
    *,
    buckets: list[tuple[datetime, datetime]],
    group_by: GroupBy,
    api_key_id: str | None = None,
    account_id: str | None = None,
) -> pa.Table:
    """The same sums as an Arrow table: `bucket`, the group fields by name, the counts, and
    `cost` / `list_cost` as DECIMAL(38, 12) USD (exact)."""
    sql, params, tables = _usage_sql(buckets, group_by, api_key_id, account_id, False, live_rollup(cur))
    names = [f"g{i}" for i in range(len(group_by.fields))]
    renamed = ", ".join(f'{g} AS "{field}"' for g, field in zip(names, group_by.fields, strict=True))
    wrapped = f"""
        SELECT idx AS bucket{', ' + renamed if renamed else ''},
               {', '.join(f'm{i}::BIGINT AS {name}' for i, name in enumerate(COUNT_FIELDS))},
               m_cost::DECIMAL(38, 0) * 0.000000000001 AS cost,
               m_list::DECIMAL(38, 0) * 0.000000000001 AS list_cost
        FROM ({sql}) AS q(idx{''.join(', ' + g for g in names)},
                         {', '.join(f'm{i}' for i in range(len(COUNT_FIELDS)))}, m_cost, m_list)
    """  # noqa: S608 (identifiers from allow-lists; values bound)
    with _registered(cur, tables):
        return cur.sql(wrapped, params=params).to_arrow_table()


def unpriced(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Models with unpriced usage, from the rollup."""
    rows = cur.execute(f"""
        SELECT model, sum(unpriced_requests), strftime(min(bucket_start), '{ISO}'), strftime(max(bucket_start), '{ISO}')
        FROM {live_rollup(cur)} WHERE unpriced_requests > 0
        GROUP BY model ORDER BY model
    """).fetchall()  # noqa: S608 (the FROM item is built from an integer)
    return [
        {"model": model, "requests": int(n), "first_bucket": first, "last_bucket": last}
        for model, n, first, last in rows
    ]


_RECORD = (
    "SELECT request_id, occurred_at, api_key_id, model, endpoint, input_tokens, cached_tokens, "  # noqa: S608 (constant)
    "cache_write_tokens, output_tokens, thinking_tokens, web_search_requests, tags, rate_version_id, "
    f"received_at, strftime(occurred_at, '{ISO_MICROS}') AS occurred_text FROM ledger WHERE request_id = ?"
)


def record(cur: duckdb.DuckDBPyConnection, request_id: str) -> dict[str, Any] | None:
    """One ledger row by request_id (a primary-key lookup). `occurred_text`: occurred_at as RFC 3339
    text, which any stored row has (a row from before the occurred_at bounds may lie outside what
    Python's datetime holds; DuckDB then gives occurred_at as text too)."""
    cur.execute(_RECORD, [request_id])
    rows = cur.fetchall()  # fetch to the end: DuckDB keeps a half-read result open
    if not rows:
        return None
    return dict(zip([d[0] for d in cur.description], rows[0], strict=True))


_CLASS_SUMS = ",\n               ".join(f"sum({sql_quantity(c, 'r')})::BIGINT AS {c.name}" for c in TOKEN_CLASSES)


def class_quantities_arrow(
    cur: duckdb.DuckDBPyConnection,
    *,
    buckets: list[tuple[datetime, datetime]],
    account_id: str | None = None,
    api_key_id: str | None = None,
    tags: bool = False,
) -> pa.Table:
    """Per bucket x account x key x model x rate version (x the record's tags, a map, with `tags`):
    the quantity of each billed class (`output` here excludes thinking, so the classes partition
    what was billed) and the stored cost and list cost in pico-dollars. From the ledger, which
    knows the version."""
    params: dict[str, Any] = {"start": naive_utc(buckets[0][0]), "end": naive_utc(buckets[-1][1])}
    account_filter = ""
    if account_id is not None:
        account_filter = f"AND coalesce(k.account_id, '{UNASSIGNED}') = $account"
        params["account"] = account_id
    if api_key_id is not None:
        account_filter += " AND r.api_key_id = $key"
        params["key"] = api_key_id
    sql = f"""
        SELECT b.idx AS bucket,
               coalesce(k.account_id, '{UNASSIGNED}') AS account_id,
               any_value(k.name) AS key_name,
               r.api_key_id, r.model, r.rate_version_id,{' r.tags,' if tags else ''}
               count(*) AS requests,
               {_CLASS_SUMS},
               coalesce(sum(r.cost_pico), 0)::DECIMAL(38, 0) AS cost_pico,
               coalesce(sum(r.list_cost_pico), 0)::DECIMAL(38, 0) AS list_cost_pico
        FROM ledger r
        LEFT JOIN api_keys k ON k.api_key_id = r.api_key_id
        ASOF JOIN usage_buckets b ON r.occurred_at >= b.bucket_start
        WHERE r.occurred_at >= $start AND r.occurred_at < $end {account_filter}
        GROUP BY ALL
        ORDER BY ALL
    """  # noqa: S608 (fixed identifiers; values bound)
    with _registered(cur, {"usage_buckets": bucket_table(buckets)}):
        return cur.sql(sql, params=params).to_arrow_table()
