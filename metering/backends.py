"""Where CLI data commands act: on the database file, or through a running server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import orjson

from metering.errors import MeteringError
from metering.ingest import BadLine, Parsed, parse_items, summarize
from metering.settings import Settings


class LocalBackend:
    """Opens the database file itself (fails clearly if a server holds it)."""

    def __init__(self, store: Any) -> None:
        self.store = store

    @classmethod
    def open(cls, settings: Settings) -> LocalBackend:
        from metering.api.app import open_store

        return cls(open_store(settings))

    def ingest(self, items: list[Any]) -> dict[str, Any]:
        parsed = parse_items(items, now=self.store.clock())
        outcomes = self.store.writer.ingest(parsed.batch) if parsed.count else []
        return summarize(parsed, outcomes)

    def ingest_table(self, table: Any, to_item: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
        """A typed table (a Parquet file's rows): checked by columns when its schema allows, the
        rows that fail any check (and every row, when it does not) checked one by one."""
        from metering.batch import split_table

        split = split_table(table, now=self.store.clock())
        if split is None:
            return self.ingest([to_item(row) for row in table.to_pylist(maps_as_pydicts="strict")])
        result = summarize(Parsed(total=len(split.positions), batch=split.table, positions=split.positions),
                           self.store.writer.ingest(split.table) if split.positions else [])
        if split.slow:
            rest = self.ingest([to_item(row) for row in table.take(split.slow).to_pylist(maps_as_pydicts="strict")])
            for name in ("accepted", "duplicates", "rejected"):
                result[name] += rest[name]
            for error in rest["errors"]:
                error["index"] = split.slow[error["index"]]
            result["errors"] = sorted(result["errors"] + rest["errors"], key=lambda e: e["index"])
        return result

    def add_key(self, body: dict[str, Any]) -> dict[str, Any]:
        from pydantic import ValidationError

        from metering.api.keys import KeyCreate, create_key

        try:
            request = KeyCreate(**body)
        except ValidationError as exc:
            raise MeteringError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None
        return create_key(self.store, request)

    def list_keys(self) -> list[dict[str, Any]]:
        return [key.as_json() for key in self.store.list_keys()]

    def rates(self) -> dict[str, Any]:
        from metering.api.rates import card_json

        return card_json(self.store.card)

    def report(self, kind: str, params: dict[str, Any]) -> bytes:
        from metering import reports

        fmt = params.pop("format")
        allowed = {"daily": reports.DAILY_FORMATS, "statement": reports.STATEMENT_FORMATS, "focus": reports.FOCUS_FORMATS}
        reports.check_format(fmt, allowed[kind])
        if kind == "daily":
            doc = reports.daily_report(self.store, **params)
        elif kind == "statement":
            doc = reports.statement(self.store, **params)
        else:
            doc = reports.focus_export(self.store, **params)
        return reports.render(doc, fmt)

    def reprice(self, body: dict[str, Any]) -> dict[str, Any]:
        from metering.service import reprice

        return reprice(self.store, **body)

    def reconcile(self, report: Any, params: dict[str, Any]) -> dict[str, Any]:
        from metering.service import reconcile

        return reconcile(self.store, report=report, **params)

    # --- budgets -----------------------------------------------------------------------------------
    def budgets(self, action: str, arg: Any = None) -> Any:
        from metering import alerts

        store = self.store
        if action == "add":
            from metering.settings import Settings

            values = alerts.validate(arg, allow_link_local=Settings.from_env().webhook_allow_link_local)
            budget = store.writer.call(lambda con: alerts.create(con, values, now=store.clock()))
            out = budget.as_json()
            if "webhook_secret" not in arg and budget.webhook_secret:
                out["webhook_secret"] = budget.webhook_secret
            return out
        if action == "delete":
            store.writer.call(lambda con: alerts.delete(con, arg, now=store.clock()))
            return None
        if action == "check":
            from decimal import Decimal

            from metering.pricing import from_usd
            from metering.settings import Settings
            from metering.webhooks import Sender, evaluate_now, parse_schedule

            settings = Settings.from_env()
            written = evaluate_now(store, anomaly_min_pico=from_usd(Decimal(settings.anomaly_min_usd)))
            sender = Sender(store, schedule=parse_schedule(settings.webhook_retry_schedule),
                            allow_link_local=settings.webhook_allow_link_local)
            try:
                sender.deliver_due()  # one round; retries happen when a server runs
            finally:
                sender.stop()
            return {"alerts_written": written}
        with store.reading() as cur:
            if action == "list":
                return {"data": [b.as_json() for b in alerts.active(cur)]}
            if action == "show":
                return alerts.get(cur, arg).as_json()
            if action == "alerts":
                return {"data": alerts.list_alerts(cur)}
        if action == "status":
            return alerts.key_status(store, api_key_id=arg, now=store.clock())
        raise MeteringError(f"unknown budgets action {action!r}")

    def close(self) -> None:
        self.store.close()


class RemoteBackend:
    """Talks to a running server's HTTP API."""

    def __init__(self, url: str, *, token: str | None, timeout: float = 120.0) -> None:
        if not token:
            raise MeteringError("--url needs a token: pass --token or set METERING_TOKEN or METERING_ADMIN_TOKEN")
        self._client = httpx.Client(base_url=url.rstrip("/"), timeout=timeout,
                                    headers={"Authorization": f"Bearer {token}"})

    def _call(self, method: str, path: str, *, ok: tuple[int, ...] = (200, 201), parse: bool = True,
              **kwargs: Any) -> Any:
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise MeteringError(f"cannot reach {self._client.base_url}: {exc}") from None
        if response.status_code not in ok:
            self._raise(response)
        return response.json() if parse else None

    @staticmethod
    def _raise(response: httpx.Response) -> None:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:500]
        raise MeteringError(f"server answered {response.status_code}: {message}")

    def ingest(self, items: list[Any]) -> dict[str, Any]:
        body = b"\n".join(item.raw if isinstance(item, BadLine) else orjson.dumps(item) for item in items)
        return self._call("POST", "/v1/usage", ok=(200, 422), content=body,
                          headers={"Content-Type": "application/x-ndjson"})

    def add_key(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/v1/keys", json=body)

    def list_keys(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/keys")["data"]

    def rates(self) -> dict[str, Any]:
        return self._call("GET", "/v1/rates")

    def report(self, kind: str, params: dict[str, Any]) -> bytes:
        try:
            response = self._client.get(f"/v1/reports/{kind}", params={k: v for k, v in params.items() if v})
        except httpx.HTTPError as exc:
            raise MeteringError(f"cannot reach {self._client.base_url}: {exc}") from None
        if response.status_code != 200:
            self._raise(response)
        return response.content

    def reprice(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/v1/reprice", json=body)

    def reconcile(self, report: Any, params: dict[str, Any]) -> dict[str, Any]:
        query = {k: v for k, v in params.items() if v is not None and k != "mapping"}
        if params.get("mapping"):
            query["map"] = params["mapping"]
        return self._call("POST", "/v1/reconcile", params={**query, "format": "json"}, content=orjson.dumps(report),
                          headers={"Content-Type": "application/json"})

    def budgets(self, action: str, arg: Any = None) -> Any:
        if action == "add":
            return self._call("POST", "/v1/budgets", json=arg)
        if action == "delete":
            self._call("DELETE", f"/v1/budgets/{arg}", ok=(204,), parse=False)
            return None
        if action == "check":
            return self._call("POST", "/v1/budgets/check")
        if action == "list":
            return self._call("GET", "/v1/budgets")
        if action == "show":
            return self._call("GET", f"/v1/budgets/{arg}")
        if action == "alerts":
            return self._call("GET", "/v1/alerts")
        if action == "status":
            return self._call("GET", "/v1/budgets/status", params={"api_key_id": arg})
        raise MeteringError(f"unknown budgets action {action!r}")

    def close(self) -> None:
        self._client.close()
