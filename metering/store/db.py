"""The DuckDB connection owner: opening, migrations, read cursors, the rate card and keys.

One `Store` per process owns the database file. Writes go through its `Writer` (one
thread, group commit); reads use short-lived cursors on the same database instance.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb

from metering.access import UNASSIGNED, ApiKey
from metering.errors import Conflict, DatabaseLocked, QueryTimeout, RateCardError
from metering.ratecard import ALL_PRICE_FIELDS, Price, RateCard, RateVersion
from metering.store import rollup, spend
from metering.timewindows import naive_utc

Clock = Callable[[], datetime]
_MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


def utcnow() -> datetime:
    return datetime.now(UTC)


EARLIEST, LATEST = datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)


def sha256_hex(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def open_connection(path: Path, *, memory_limit: str | None = None) -> duckdb.DuckDBPyConnection:
    """Open the database file; a file held by another process gets a clear message. `memory_limit`
    (DuckDB's, e.g. "3GB"): past it, large queries spill to disk next to the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return duckdb.connect(str(path), config={"memory_limit": memory_limit} if memory_limit else {})
    except duckdb.IOException as exc:
        text = str(exc)
        if "lock" in text.lower():
            holder = re.search(r"PID (\d+)", text)
            who = f" (process {holder.group(1)})" if holder else ""
            raise DatabaseLocked(
                f"the database file {path} is in use by another process{who}, probably `metering serve`; "
                "pass --url (or set METERING_URL) to go through the running server"
            ) from None
        raise


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration file, in order."""
    found = []
    for entry in resources.files("metering.store").joinpath("migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


def migrate(con: duckdb.DuckDBPyConnection, *, now: datetime) -> list[str]:
    """Apply the migrations not yet recorded in the database; return the names applied."""
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        "version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)"
    )
    done = {row[0] for row in con.execute("SELECT version FROM schema_migrations").fetchall()}
    applied = []
    for version, name, sql in migrations():
        if version in done:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(sql)
            con.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", [version, name, naive_utc(now)])
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        applied.append(name)
    return applied


_PRICE_COLUMNS = [f"{name}_{basis}" for name in ALL_PRICE_FIELDS for basis in ("current", "list")]


def _version_from_row(row: tuple) -> RateVersion:
    version_id, model, effective_from, *prices = row
    values: dict[str, Price | None] = {}
    for i, name in enumerate(ALL_PRICE_FIELDS):
        current, list_ = prices[2 * i], prices[2 * i + 1]
        values[name] = None if current is None else Price(Decimal(current), Decimal(list_))
    return RateVersion(
        id=version_id, model=model, effective_from=effective_from.replace(tzinfo=UTC), **values  # type: ignore[arg-type]
    )


class Store:
    """Owns one DuckDB database file for the life of the process."""

    def __init__(self, path: Path | str, *, clock: Clock = utcnow, memory_limit: str | None = None) -> None:
        self.path = Path(path)
        self.clock = clock
        self._con = open_connection(self.path, memory_limit=memory_limit)
        self._lock = threading.Lock()
        self._closed = False
        self._versions: dict[str, int] = {}
        migrate(self._con, now=clock())
        self.card = self._load_card()
        self._keys_by_digest: dict[str, ApiKey] = {}
        self._keys_by_id: dict[str, ApiKey] = {}
        for key in self._load_keys():
            self._remember_key(key)
        self._con.execute(rollup.DEFINITIONS)
        from metering.store.writer import Writer  # the writer needs a constructed store

        self.writer = Writer(self)

    # --- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.writer.stop()
        self._con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        with self._lock:
            if self._closed:
                raise RuntimeError("store is closed")
            return self._con.cursor()

    def commit_apart(self, fn: Callable[[duckdb.DuckDBPyConnection], Any]) -> Any:
        """Run fn(cursor) in a short transaction of its own beside the writer's, committed (durable)
        before this returns. Only for small writes on the request path that must not wait behind a
        group commit of ingest and touch no row the writer changes (reservation holds); every other
        write goes through the writer."""
        cur = self.cursor()
        try:
            cur.execute("BEGIN TRANSACTION")
            try:
                result = fn(cur)
                cur.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(duckdb.Error):
                    cur.execute("ROLLBACK")
                raise
            return result
        finally:
            cur.close()

    @contextlib.contextmanager
    def reading(self, *, timeout: float | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor inside one read transaction: every query in the block sees the same snapshot.
        With `timeout` (seconds), a query still running then is interrupted: QueryTimeout."""
        cur = self.cursor()
        timer = threading.Timer(timeout, cur.interrupt) if timeout else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            cur.execute("BEGIN TRANSACTION")
            yield cur
        except duckdb.InterruptException:
            raise QueryTimeout(f"the query ran longer than {timeout:g} s and was stopped; narrow the range or "
                               "the grouping", retry_after=max(1, int(timeout or 1))) from None
        finally:
            if timer is not None:
                timer.cancel()
            with contextlib.suppress(duckdb.Error):
                cur.execute("ROLLBACK")
            cur.close()

    def touch(self, table: str) -> None:
        """Note that a table changed (for caches of it kept above the store)."""
        with self._lock:
            self._versions[table] = self._versions.get(table, 0) + 1

    def version(self, table: str) -> int:
        return self._versions.get(table, 0)

    def record_count(self) -> int:
        with self.reading() as cur:
            return int(cur.execute("SELECT count(*) FROM ledger").fetchall()[0][0])

    # --- rate card -----------------------------------------------------------------------------
    def _load_card(self) -> RateCard:
        card = RateCard()
        rows = self._con.execute(
            f"SELECT id, model, effective_from, {', '.join(_PRICE_COLUMNS)} FROM rate_versions ORDER BY id"  # noqa: S608 (fixed column list)
        ).fetchall()
        for row in rows:
            card.add(_version_from_row(row))
        aliases = self._con.execute("SELECT alias, model FROM rate_aliases ORDER BY alias").fetchall()
        card.aliases = dict(aliases)  # checked when each was added
        return card

    def seed_rate_card(self, card: RateCard, *, source: str) -> int:
        """Insert the file's versions that the database lacks. A version present in both with
        different prices stops start-up: prices change by adding a version, never by editing."""
        added = 0
        for version in card.all_versions():
            existing = self.card.version_at(version.model, version.effective_from)
            if existing is not None and existing.effective_from == version.effective_from:
                if not existing.same_prices(version):
                    raise RateCardError(
                        f"{source}: model {version.model!r} version effective from "
                        f"{version.effective_from.isoformat()} differs from the one already in the database; "
                        "add a new version with a later effective_from instead of editing one"
                    )
                continue
            self.writer.call(lambda con, v=version: self._insert_version(con, v, source=source))
            added += 1
        for alias, model in sorted(card.aliases.items()):
            if self.card.aliases.get(alias) == model:
                continue
            try:
                self.card.copy().add_alias(alias, model)
            except (Conflict, RateCardError) as exc:
                raise RateCardError(f"{source}: model {model!r}: alias {alias!r}: {exc.message}") from None
            self.writer.call(lambda con, a=alias, m=model: self._insert_aliases(con, m, [a], source=source))
        return added

    def add_rate_version(self, version: RateVersion, *, source: str = "api") -> RateVersion:
        return self.writer.call(lambda con: self._insert_version(con, version, source=source))

    def add_rates(self, model: str, *, version: RateVersion | None, aliases: list[str],
                  source: str = "api") -> tuple[RateVersion | None, list[str]]:
        """A version of `model` and/or aliases of it, in one transaction: all of it, or (a Conflict, a
        RateCardError) none of it. Returns the stored version and the aliases that were new."""

        def add(con: duckdb.DuckDBPyConnection) -> tuple[RateVersion | None, list[str]]:
            trial = self.card.copy()  # every check first, on a copy: the card changes only once all pass
            if version is not None:
                self._check_new_version(version)
                trial.add(version)
            new = [alias for alias in aliases if trial.add_alias(alias, model)]
            stored = self._insert_version(con, version, source=source) if version is not None else None
            self._insert_aliases(con, model, new, source=source)
            return stored, new

        return self.writer.call(add)

    def _insert_aliases(self, con: duckdb.DuckDBPyConnection, model: str, aliases: list[str], *, source: str) -> None:
        if not aliases:
            return
        now = naive_utc(self.clock())
        con.executemany("INSERT INTO rate_aliases VALUES (?, ?, ?, ?)", [[a, model, now, source] for a in aliases])
        self.card.aliases = {**self.card.aliases, **dict.fromkeys(aliases, model)}  # after the insert, as versions

    def _check_new_version(self, version: RateVersion) -> None:
        if version.model in self.card.aliases:
            raise Conflict(f"{version.model!r} is an alias of model {self.card.aliases[version.model]!r}: give that "
                           "model the version")
        existing = self.card.version_at(version.model, version.effective_from)
        if existing is not None and existing.effective_from == version.effective_from:
            raise Conflict(
                f"model {version.model!r} already has a version effective from "
                f"{version.effective_from.isoformat().replace('+00:00', 'Z')}"
            )

    def _insert_version(self, con: duckdb.DuckDBPyConnection, version: RateVersion, *, source: str) -> RateVersion:
        self._check_new_version(version)
        (next_id,) = con.execute("SELECT coalesce(max(id), 0) + 1 FROM rate_versions").fetchall()[0]
        prices: list[Any] = []
        for name in ALL_PRICE_FIELDS:
            price = getattr(version, name)
            prices += [price.current, price.list] if price else [None, None]
        con.execute(
            f"INSERT INTO rate_versions (id, model, effective_from, {', '.join(_PRICE_COLUMNS)}, created_at, source) "  # noqa: S608
            f"VALUES ({', '.join('?' * (len(_PRICE_COLUMNS) + 5))})",
            [next_id, version.model, naive_utc(version.effective_from), *prices, naive_utc(self.clock()), source],
        )
        stored = RateVersion(**{**{f: getattr(version, f) for f in version.__dataclass_fields__}, "id": next_id})
        self.card.add(stored)  # after the insert; the writer commits right after this returns
        return stored

    # --- keys ------------------------------------------------------------------------------------
    def _load_keys(self) -> list[ApiKey]:
        rows = self._con.execute(
            "SELECT api_key_id, account_id, name, secret_sha256, created_at FROM api_keys ORDER BY api_key_id"
        ).fetchall()
        return [ApiKey(*row[:4], created_at=row[4].replace(tzinfo=UTC)) for row in rows]

    def _remember_key(self, key: ApiKey) -> None:
        self._keys_by_digest[key.secret_sha256] = key
        self._keys_by_id[key.api_key_id] = key

    def list_keys(self) -> list[ApiKey]:
        return sorted(self._keys_by_id.values(), key=lambda k: k.api_key_id)

    def key(self, api_key_id: str) -> ApiKey | None:
        return self._keys_by_id.get(api_key_id)

    def key_for_secret(self, secret: str) -> ApiKey | None:
        """The key whose secret this is. The lookup is by SHA-256 digest; the final comparison
        is constant-time."""
        digest = sha256_hex(secret)
        key = self._keys_by_digest.get(digest)
        if key is not None and hmac.compare_digest(key.secret_sha256, digest):
            return key
        return None

    def add_key(self, *, api_key_id: str, account_id: str, name: str | None, secret_sha256: str) -> ApiKey:
        def insert(con: duckdb.DuckDBPyConnection) -> ApiKey:
            if api_key_id in self._keys_by_id:
                raise Conflict(f"api key {api_key_id!r} is already registered")
            if secret_sha256 in self._keys_by_digest:
                raise Conflict("that secret is already in use by another key")
            key = ApiKey(api_key_id, account_id, name, secret_sha256, self.clock().astimezone(UTC))
            con.execute(
                "INSERT INTO api_keys VALUES (?, ?, ?, ?, ?)",
                [api_key_id, account_id, name, secret_sha256, naive_utc(key.created_at)],
            )
            used = con.execute("SELECT 1 FROM ledger WHERE api_key_id = ? LIMIT 1", [api_key_id]).fetchall()
            if used:  # its usage moves from 'unassigned' to its account: those budgets' counters are recomputed
                moved = [r[0] for r in con.execute(
                    "SELECT id FROM budgets WHERE deleted_at IS NULL AND scope_kind = 'account' AND scope_value IN (?, ?)",
                    [account_id, UNASSIGNED]).fetchall()]
                if moved:
                    spend.refresh(con, lo=EARLIEST, hi=LATEST, budget_ids=moved)
            self._remember_key(key)
            return key

        return self.writer.call(insert)
