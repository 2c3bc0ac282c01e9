"""The context every service function takes: the store, the settings, and the caches over them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import pyarrow as pa

from metering.budgets import Budget
from metering.pricing import units_table
from metering.ratecard import load_rate_card
from metering.services.admission import Admission
from metering.services.statuscache import StatusCache
from metering.settings import Settings
from metering.store.db import Store

if TYPE_CHECKING:
    from metering.services.metrics import Metrics


@dataclass
class Context:
    """One per process (the HTTP app, a CLI command on the database file). Owns nothing it must
    close: the store's owner closes the store."""

    store: Store
    settings: Settings = field(default_factory=Settings)
    status_cache: StatusCache = field(default_factory=StatusCache)
    metrics: Metrics | None = None  # the HTTP app's (GET /metrics); None in the CLI
    _units: tuple[tuple, pa.Table] | None = field(default=None, repr=False)
    _admission: Admission | None = field(default=None, repr=False)
    _budgets: tuple[int, list[Budget]] | None = field(default=None, repr=False)

    @property
    def admission(self) -> Admission:
        """The open reservation holds of this store (made on first use; one per context)."""
        if self._admission is None:
            self._admission = Admission(self.store, self.store.clock)
        return self._admission

    def active_budgets(self, version: int, read: Callable[[], list[Budget]]) -> list[Budget]:
        """The active budgets, read again (by `read`, in a read snapshot begun after `version` was taken
        from `store.version("budgets")`) only when they changed. Every change to a budget is noted
        (Store.touch) after its commit, so a list kept under a version is never older than it."""
        cached = self._budgets
        if cached is None or cached[0] != version:
            cached = self._budgets = (version, read())
        return cached[1]

    def now(self) -> datetime:
        return self.store.clock()

    def units(self) -> pa.Table:
        """The rate card's unit prices as a table (for pricing in SQL), rebuilt when a version or an alias
        is added."""
        card = self.store.card
        versions = (tuple(v.id for v in card.all_versions()), card.aliases)  # aliases: replaced on each change
        if self._units is None or self._units[0][0] != versions[0] or self._units[0][1] is not versions[1]:
            self._units = (versions, units_table(card))
        return self._units[1]


def open_store(settings: Settings) -> Store:
    """Open the database and seed it with the rate card file (a malformed card raises)."""
    card = load_rate_card(settings.rate_card_path)
    store = Store(settings.db_path, memory_limit=settings.memory_limit)
    try:
        store.seed_rate_card(card, source=str(settings.rate_card_path))
    except Exception:
        store.close()
        raise
    return store
