"""Where CLI data commands act: on the database file, or through a running server (given --url,
or found through the file a server leaves beside the database it holds: `ServerFile`)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from metering.access import ADMIN_PRINCIPAL
from metering.errors import MeteringError
from metering.services import alerts, budgets, ingest, keys, periods, rates, reconcile, reports, reprice
from metering.services.context import Context, open_store
from metering.services.delivery import Sender
from metering.services.documents import check_format, render
from metering.services.ingest import BadLine
from metering.settings import Settings


def _report(source: Any, kind: str, params: dict[str, Any], *, now: Any, notes: Callable[[], dict] | None = None) -> bytes:
    """A finance document from a source (the ledger, or the lake), rendered."""
    fmt = params.pop("format")
    allowed = {"daily": reports.DAILY_FORMATS, "statement": reports.STATEMENT_FORMATS, "focus": reports.FOCUS_FORMATS}
    check_format(fmt, allowed[kind])
    if kind == "daily":
        doc = reports.daily_report(source, now=now, **params)
    elif kind == "statement":
        doc = reports.statement(source, **params)
    else:
        doc = reports.focus_export(source, **params)
    if notes is not None:
        doc.meta.update(notes())
    return render(doc, fmt)


class LocalBackend:
    """Opens the database file itself (fails clearly if a server holds it) and calls the services as
    the admin."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @classmethod
    def open(cls, settings: Settings) -> LocalBackend:
        ctx = Context(open_store(settings), settings)
        budgets.track_untracked(ctx)
        return cls(ctx)

    def ingest(self, items: list[Any]) -> dict[str, Any]:
        return ingest.ingest_items(self.ctx, items)

    def ingest_table(self, table: Any, to_item: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
        return ingest.ingest_table(self.ctx, table, to_item)

    def add_key(self, body: dict[str, Any]) -> dict[str, Any]:
        return keys.create(self.ctx, body=keys.KeyCreate.parse(body))

    def list_keys(self) -> list[dict[str, Any]]:
        return keys.list_keys(self.ctx)

    def rates(self) -> dict[str, Any]:
        return rates.get_card(self.ctx)

    def report(self, kind: str, params: dict[str, Any]) -> bytes:
        return _report(reports.LedgerSource(self.ctx), kind, params, now=self.ctx.now())

    def reprice(self, body: dict[str, Any]) -> dict[str, Any]:
        return reprice.reprice(self.ctx, **body)

    def reconcile(self, report: Any, params: dict[str, Any]) -> dict[str, Any]:
        return reconcile.reconcile(self.ctx, report=report, **params)

    def periods(self, action: str, month: str | None = None) -> dict[str, Any]:
        if action == "close":
            return periods.close(self.ctx, month=month or "", by="cli")
        return periods.list_periods(self.ctx)

    def budgets(self, action: str, arg: Any = None) -> Any:
        ctx = self.ctx
        if action == "add":
            return budgets.create(ctx, body=arg)
        if action == "delete":
            budgets.delete(ctx, budget_id=arg)
            return None
        if action == "check":
            written = alerts.evaluate_now(ctx)
            sender = Sender(ctx)
            try:
                sender.deliver_due()  # one round; retries happen when a server runs
            finally:
                sender.stop()
            return {"alerts_written": written}
        if action == "list":
            return {"data": budgets.list_budgets(ctx, principal=ADMIN_PRINCIPAL)}
        if action == "show":
            return budgets.get_budget(ctx, budget_id=arg, principal=ADMIN_PRINCIPAL)
        if action == "alerts":
            return {"data": alerts.list_alerts(ctx, principal=ADMIN_PRINCIPAL)}
        if action == "status":
            return budgets.key_status(ctx, api_key_id=arg, principal=ADMIN_PRINCIPAL)
        raise MeteringError(f"unknown budgets action {action!r}")

    def close(self) -> None:
        self.ctx.store.close()


class LakeBackend:
    """`report --engine spark`: the same documents, computed by Spark over the lake."""

    def __init__(self, lake: str, master: str | None, *, billing_tz: str = "UTC") -> None:
        self.lake, self.master, self.billing_tz = lake, master, billing_tz

    def report(self, kind: str, params: dict[str, Any]) -> bytes:
        from metering.lake import spark_source

        source = spark_source(self.lake, master=self.master, billing_tz=self.billing_tz)
        try:
            return _report(source, kind, params, now=source.clock(), notes=source.report_notes)
        finally:
            source.warn()


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

    def periods(self, action: str, month: str | None = None) -> dict[str, Any]:
        if action == "close":
            return self._call("POST", "/v1/periods/close", json={"month": month})
        return self._call("GET", "/v1/periods")

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


@dataclass(frozen=True, slots=True)
class ServerFile:
    """`<database>.server.json`: written by `metering serve` and `metering demo` while they hold the
    database file, removed when they stop. It names the server's URL and process, and the admin token
    only when the server generated it (`--dev`, the demo), which it printed anyway; a token from the
    environment is never written. Readable by its owner only."""

    path: Path
    url: str
    pid: int
    token: str | None = None

    @staticmethod
    def path_for(db_path: Path) -> Path:
        return db_path.with_name(db_path.name + ".server.json")

    @classmethod
    def announce(cls, db_path: Path, *, host: str, port: int, token: str | None) -> ServerFile:
        if host in ("", "0.0.0.0"):  # noqa: S104 (a listening address, mapped to one to connect to)
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        found = cls(cls.path_for(db_path), url, os.getpid(), token)
        data = {"url": url, "pid": found.pid, "db": str(db_path.resolve()), **({"admin_token": token} if token else {})}
        temporary = found.path.with_name(found.path.name + f".{found.pid}")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            json.dump(data, handle)
        os.replace(temporary, found.path)
        return found

    def withdraw(self) -> None:
        """Remove the file, if it is still this process's."""
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            if int(json.loads(self.path.read_text(encoding="utf-8"))["pid"]) == self.pid:
                self.path.unlink()

    @classmethod
    def find(cls, db_path: Path) -> ServerFile | None:
        """The server that announced itself for this database, if its process still runs."""
        path = cls.path_for(db_path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            found = cls(path, str(data["url"]), int(data["pid"]), data.get("admin_token") or None)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        try:
            os.kill(found.pid, 0)
        except ProcessLookupError:
            return None  # left by a server that was killed
        except PermissionError:
            pass  # another user's process: it runs
        return found
