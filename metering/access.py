"""Who is asking: the three roles of the contract, and the key model.

- admin: everything;
- ingest (the gateway): sends usage, traces and reservations, and reads budget status for enforcement;
- key (a registered API key's own secret): its own usage, budgets and alerts, nothing else;
- metrics (a Prometheus scraper): GET /metrics, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from metering.errors import Forbidden

ADMIN, INGEST, KEY, METRICS = "admin", "ingest", "key", "metrics"
UNASSIGNED = "unassigned"  # the account of keys that are not registered


@dataclass(frozen=True, slots=True)
class ApiKey:
    api_key_id: str
    account_id: str
    name: str | None
    secret_sha256: str
    created_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "api_key_id": self.api_key_id,
            "account_id": self.account_id,
            "name": self.name,
            "created_at": self.created_at.isoformat().replace("+00:00", "Z"),
        }


@dataclass(frozen=True, slots=True)
class Principal:
    role: str
    key: ApiKey | None = None

    @property
    def is_key(self) -> bool:
        return self.role == KEY

    def visible_key(self, requested: str | None) -> str | None:
        """The api_key_id a query is limited to: a key always sees itself, and asking for another
        key's data is forbidden; admin and the gateway see what they ask for (None: all)."""
        if self.role != KEY:
            return requested
        assert self.key is not None
        if requested is not None and requested != self.key.api_key_id:
            raise Forbidden("a key may read only its own data")
        return self.key.api_key_id


ADMIN_PRINCIPAL = Principal(ADMIN)
