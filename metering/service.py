"""Operations shared by the HTTP API and the CLI's local backend."""

from __future__ import annotations

from typing import Any

from metering import repricing
from metering.errors import BadRequest
from metering.timewindows import parse_bound, zone


def reprice(store: Any, *, start: str, end: str, tz: str = "UTC", dry_run: bool) -> dict[str, Any]:
    """Re-rate [start, end) (dates are local midnights in tz). A dry run writes nothing."""
    zone_info = zone(tz)
    start_at, end_at = parse_bound(start, zone_info, "start"), parse_bound(end, zone_info, "end")
    if end_at <= start_at:
        raise BadRequest("end must be after start")
    if dry_run:
        with store.reading() as cur:
            result = repricing.preview(cur, store.card, start=start_at, end=end_at)
        result.pop("_raw")
        return {"dry_run": True, **result}
    def run(con: Any) -> dict[str, Any]:
        store.writer.flush(con)  # the rollup refresh in apply() recomputes rolled-up cells only
        return repricing.apply(con, store.card, start=start_at, end=end_at, now=store.clock())

    result = store.writer.call(run)
    return {"dry_run": False, **result}


def reprice_runs(store: Any) -> list[dict[str, Any]]:
    with store.reading() as cur:
        return repricing.runs(cur)
