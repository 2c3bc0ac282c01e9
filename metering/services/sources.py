"""Where a document's figures come from: this node's ledger and its closed periods, read in one
snapshot (a read transaction, or the writer's own transaction during a close)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime
from typing import Any, Protocol

import pyarrow as pa

from metering.ratecard import RateCard
from metering.services.context import Context
from metering.store import periods as stored
from metering.store import queries


class Source(Protocol):
    """The ledger's figures as Arrow tables. The node's ledger (`LedgerSource`), or another engine
    (the lake through Apache Spark) answering the same tables."""

    card: RateCard
    billing_tz: str

    def usage_arrow(self, *, buckets: list[tuple[datetime, datetime]], group_by: queries.GroupBy) -> pa.Table: ...

    def class_quantities_arrow(self, *, buckets: list[tuple[datetime, datetime]], account_id: str | None = None,
                               tags: bool = False) -> pa.Table: ...


class CursorSource:
    """The figures of one DuckDB snapshot: the ledger, and the stored figures of closed months."""

    def __init__(self, cur: Any, card: RateCard, *, billing_tz: str = "UTC",
                 key_names: dict[str, str | None] | None = None) -> None:
        self.cur = cur
        self.card = card
        self.billing_tz = billing_tz
        self.key_names = key_names or {}

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[CursorSource]:
        yield self

    def usage_arrow(self, *, buckets: list[tuple[datetime, datetime]], group_by: queries.GroupBy) -> pa.Table:
        return queries.usage_arrow(self.cur, buckets=buckets, group_by=group_by)

    def class_quantities_arrow(self, *, buckets: list[tuple[datetime, datetime]], account_id: str | None = None,
                               tags: bool = False) -> pa.Table:
        return queries.class_quantities_arrow(self.cur, buckets=buckets, account_id=account_id, tags=tags)

    # --- closed periods ---------------------------------------------------------------------------
    def periods(self) -> list[dict[str, Any]]:
        return stored.periods(self.cur)

    def first_usage(self, *, after: datetime, before: datetime) -> datetime | None:
        return stored.first_usage(self.cur, after=after, before=before)

    def closed_statement(self, month: str, account_id: str) -> tuple[dict[str, Any] | None, pa.Table]:
        return stored.statement_header(self.cur, month, account_id), stored.statement_lines(self.cur, month, account_id)

    def closed_focus(self, months: list[str]) -> pa.Table:
        return stored.focus_lines(self.cur, months)

    def billed_statement(self, *, before: str) -> pa.Table:
        return stored.billed_statement_sums(self.cur, before=before)

    def billed_focus(self, *, before: str) -> pa.Table:
        return stored.billed_focus_sums(self.cur, before=before)


class LedgerSource:
    """This node's ledger. Single tables are read each in its own snapshot, bounded by the query
    timeout; documents that read several (statements, FOCUS) take a `snapshot()`."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self.card = ctx.store.card
        self.billing_tz = ctx.settings.billing_tz

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[CursorSource]:
        names = {k.api_key_id: k.name for k in self._ctx.store.list_keys()}
        with self._ctx.store.reading(timeout=self._ctx.settings.query_timeout) as cur:
            yield CursorSource(cur, self.card, billing_tz=self.billing_tz, key_names=names)

    def usage_arrow(self, *, buckets: list[tuple[datetime, datetime]], group_by: queries.GroupBy) -> pa.Table:
        with self.snapshot() as src:
            return src.usage_arrow(buckets=buckets, group_by=group_by)

    def class_quantities_arrow(self, *, buckets: list[tuple[datetime, datetime]], account_id: str | None = None,
                               tags: bool = False) -> pa.Table:
        with self.snapshot() as src:
            return src.class_quantities_arrow(buckets=buckets, account_id=account_id, tags=tags)


@contextlib.contextmanager
def snapshot(source: Any) -> Iterator[Any]:
    """One consistent view of a source: its own snapshot() where it has one (the ledger), else itself."""
    opener = getattr(source, "snapshot", None)
    if opener is None:
        yield source
    else:
        with opener() as src:
            yield src
