"""Ingest: a body (JSON, an array, NDJSON) or items -> validated, priced records -> the writer ->
one outcome per record (accepted, duplicate, rejected with the reason).

The steps before the writer are pure: `decode_body`, `parse_items` (canonical records of large
bodies checked a column at a time by `metering.batch`, the rest one by one by
`records.parse_record`, which words every error), `price` (small bodies priced here in Python; large
ones handed over as a table the store prices in its INSERT with the same integers). A response is
sent only once the writer has committed: an acknowledged record is durable.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import pyarrow as pa

from metering.batch import records_table, split_items, split_table
from metering.errors import BadRequest, PayloadTooLarge, RecordError
from metering.pricing import COST_OUT_OF_RANGE, CostOverflow, total_pico, unit_prices
from metering.ratecard import RateCard
from metering.records import UsageRecord, parse_record
from metering.services.context import Context
from metering.store.writer import ACCEPTED, DUPLICATE, Batch, Outcome, PricedRecords, UnpricedTable

MAX_BODY_BYTES = 10 * 1024 * 1024
MAX_RECORDS = 10_000
NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines")


@dataclass(frozen=True, slots=True)
class BadLine:
    """An NDJSON line that is not JSON: rejected at its index, the rest of the body goes on."""

    message: str
    raw: bytes = b""


@dataclass
class Parsed:
    """The valid records of a body (with their body positions), and the errors of the others.
    `batch`: a small body's parsed records, or a canonical table; `price` makes it what the writer
    takes."""

    total: int
    batch: pa.Table | list[UsageRecord] | Batch | None = None
    positions: list[int] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return 0 if self.batch is None else len(self.batch)

    @property
    def table(self) -> pa.Table | None:
        batch = self.batch
        if isinstance(batch, UnpricedTable):
            return batch.table
        if isinstance(batch, PricedRecords):
            return records_table(batch.records)
        return batch if batch is None or isinstance(batch, pa.Table) else records_table(batch)

    def request_id(self, row: int) -> str:
        batch = self.batch
        if isinstance(batch, UnpricedTable):
            batch = batch.table
        if isinstance(batch, pa.Table):
            return batch["request_id"][row].as_py()
        if isinstance(batch, PricedRecords):
            return batch.records[row].request_id
        return batch[row].request_id  # type: ignore[index]


def is_ndjson(content_type: str | None) -> bool:
    media = (content_type or "").split(";")[0].strip().lower()
    return media in NDJSON_TYPES


def _error(index: int, request_id: Any, exc: RecordError | str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "index": index,
        "request_id": request_id if isinstance(request_id, str) else None,
        "error": exc if isinstance(exc, str) else exc.message,
    }
    if isinstance(exc, RecordError) and exc.field:
        entry["field"] = exc.field
    return entry


def decode_body(body: bytes, *, ndjson: bool) -> list[Any]:
    """Body -> list of items; an NDJSON line that is not JSON stays as an error marker."""
    if len(body) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"the body is {len(body)} bytes; at most {MAX_BODY_BYTES} bytes (10 MiB) per request")
    if ndjson:
        items: list[Any] = []
        for lineno, line in enumerate(body.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                items.append(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                items.append(BadLine(f"line {lineno}: not valid JSON: {exc}", line))
        if not items:
            raise BadRequest("the body holds no records")
    else:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(
                f"the body is not valid JSON ({exc}); send a record, an array of records, or NDJSON "
                "with Content-Type: application/x-ndjson"
            ) from None
        if isinstance(data, dict):
            items = [data]
        elif isinstance(data, list):
            items = data
        else:
            raise BadRequest("the body must be a JSON object (one record) or an array of records")
    if len(items) > MAX_RECORDS:
        raise PayloadTooLarge(f"the body holds {len(items)} records; at most {MAX_RECORDS} per request")
    return items




FAST_PATH_MIN = 32  # below this many records, checking one at a time is quicker than by columns


def parse_items(items: list[Any], *, now: datetime) -> Parsed:
    """Validate a body's items: canonical records of a large body by columns (metering.batch),
    the rest one by one (parse_record, which words every error)."""
    if len(items) >= FAST_PATH_MIN:
        split = split_items(items, now=now)
        fast, positions, slow = split.table, split.positions, split.slow
    else:
        fast, positions, slow = None, [], range(len(items))
    parsed = Parsed(total=len(items))
    records: list[UsageRecord] = []
    slow_positions: list[int] = []
    for index in slow:
        item = items[index]
        if isinstance(item, BadLine):
            parsed.errors.append(_error(index, None, item.message))
            continue
        try:
            records.append(parse_record(item, now=now))
        except RecordError as exc:
            request_id = item.get("request_id") if isinstance(item, dict) else None
            parsed.errors.append(_error(index, request_id, exc))
            continue
        slow_positions.append(index)
    if fast is None or not fast.num_rows:
        parsed.batch, parsed.positions = (records or None), slow_positions
    elif not records:
        parsed.batch, parsed.positions = fast, positions
    else:  # both paths found records: back into body order, so the first of two equal request_ids stays first
        table = pa.concat_tables([fast, records_table(records)])
        order = sorted(range(table.num_rows), key=(positions + slow_positions).__getitem__)
        parsed.batch, parsed.positions = table.take(order), sorted(positions + slow_positions)
    return parsed


def price(parsed: Parsed, card: RateCard, units: pa.Table) -> Parsed:
    """What the writer takes: a table, with the unit prices to price it in the INSERT; or parsed records
    priced here (the version in effect at occurred_at; a cost beyond the supported range rejects that
    record alone)."""
    batch = parsed.batch
    if batch is None or isinstance(batch, (PricedRecords, UnpricedTable)):
        return parsed
    if isinstance(batch, pa.Table):
        parsed.batch = UnpricedTable(batch, units)
        return parsed
    records, prices, positions = [], [], []
    for record, position in zip(batch, parsed.positions, strict=True):
        version = card.version_at(record.model, record.occurred_at)
        try:
            priced = ((version.id, total_pico(record, unit_prices(version, "current")),
                       total_pico(record, unit_prices(version, "list"))) if version is not None else (None, None, None))
        except CostOverflow:
            parsed.errors.append(_error(position, record.request_id, f"request_id {record.request_id!r}: "
                                                                     f"{COST_OUT_OF_RANGE}"))
            continue
        records.append(record)
        prices.append(priced)
        positions.append(position)
    parsed.batch = PricedRecords(records, prices) if records else None
    parsed.positions = positions
    return parsed


def prepare(ctx: Context, items: list[Any]) -> Parsed:
    """Items -> checked, priced records and the errors of the others (no I/O)."""
    return price(parse_items(items, now=ctx.now()), ctx.store.card, ctx.units())


def submit(ctx: Context, parsed: Parsed) -> Future:
    """Hand the records to the writer; the future resolves to their outcomes once committed."""
    if not parsed.count:
        done: Future = Future()
        done.set_result([])
        return done
    return ctx.store.writer.submit_ingest(parsed.batch)  # type: ignore[arg-type]


def ingest_items(ctx: Context, items: list[Any]) -> dict[str, Any]:
    """Items -> the ingest answer, waiting for the commit (the CLI, the demo, other ways in)."""
    parsed = prepare(ctx, items)
    return summarize(parsed, submit(ctx, parsed).result())


def ingest_records(ctx: Context, records: list[UsageRecord]) -> list[Outcome]:
    """Records already parsed (the demo, tests, importers that build them): priced and committed;
    one outcome each (a cost beyond the supported range: rejected)."""
    parsed = price(Parsed(total=len(records), batch=list(records), positions=list(range(len(records)))),
                   ctx.store.card, ctx.units())
    outcomes = iter(submit(ctx, parsed).result())
    rejected = {e["index"]: Outcome("rejected", e["error"]) for e in parsed.errors}
    return [rejected[i] if i in rejected else next(outcomes) for i in range(len(records))]


def ingest_table(ctx: Context, table: pa.Table, to_item: Any) -> dict[str, Any]:
    """A typed table (a Parquet file's rows): checked by columns when its schema allows, the rows that
    fail any check (and every row, when it does not) one by one."""
    split = split_table(table, now=ctx.now())
    if split is None:
        return ingest_items(ctx, [to_item(row) for row in table.to_pylist(maps_as_pydicts="strict")])
    parsed = price(Parsed(total=len(split.positions), batch=split.table, positions=split.positions), ctx.store.card,
                   ctx.units())
    result = summarize(parsed, submit(ctx, parsed).result())
    if split.slow:
        rest = ingest_items(ctx, [to_item(row) for row in table.take(split.slow).to_pylist(maps_as_pydicts="strict")])
        for name in ("accepted", "duplicates", "rejected"):
            result[name] += rest[name]
        for error in rest["errors"]:
            error["index"] = split.slow[error["index"]]
        result["errors"] = sorted(result["errors"] + rest["errors"], key=lambda e: e["index"])
    return result


def summarize(parsed: Parsed, outcomes: list[Outcome]) -> dict[str, Any]:
    """The response body: counts, and the errors sorted by index."""
    errors = list(parsed.errors)
    accepted = duplicates = 0
    for row, (index, outcome) in enumerate(zip(parsed.positions, outcomes, strict=True)):
        if outcome.status == ACCEPTED:
            accepted += 1
        elif outcome.status == DUPLICATE:
            duplicates += 1
        else:
            errors.append(_error(index, parsed.request_id(row), outcome.error or "rejected"))
    errors.sort(key=lambda e: e["index"])
    return {"accepted": accepted, "duplicates": duplicates, "rejected": len(errors), "errors": errors}
