"""POST /v1/usage bodies -> validated records and per-record errors (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import pyarrow as pa

from metering.batch import records_table, split_items
from metering.errors import BadRequest, PayloadTooLarge, RecordError
from metering.records import UsageRecord, parse_record
from metering.store.writer import ACCEPTED, DUPLICATE, Outcome

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
    `batch` is what the writer takes: a small body's parsed records (the writer makes one table of
    a whole group of them), or a canonical table."""

    total: int
    batch: pa.Table | list[UsageRecord] | None = None
    positions: list[int] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return 0 if self.batch is None else len(self.batch)

    @property
    def table(self) -> pa.Table | None:
        return self.batch if self.batch is None or isinstance(self.batch, pa.Table) else records_table(self.batch)

    def request_id(self, row: int) -> str:
        if isinstance(self.batch, pa.Table):
            return self.batch["request_id"][row].as_py()
        return self.batch[row].request_id  # type: ignore[index]


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
