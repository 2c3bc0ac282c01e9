"""The `metering` command.

Data commands (`import`, `keys`, `rates`) open the database file themselves, or, given
--url (or METERING_URL), go through a running server's HTTP API.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from metering.errors import DatabaseLocked, MeteringError
from metering.settings import Settings, SettingsError

EXIT_USAGE = 2
EXIT_REJECTED = 1
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a tool killed by a closed pipe


def _fail(message: str) -> int:
    print(f"metering: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        db_path=Path(args.db) if getattr(args, "db", None) else None,
        url=getattr(args, "url", None),
        client_token=getattr(args, "token", None),
        rate_card_path=Path(args.rate_card) if getattr(args, "rate_card", None) else None,
    )


# --- serve -----------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        settings, generated, store = _open_for_serving(Settings.from_env(
            db_path=Path(args.db) if args.db else None,
            rate_card_path=Path(args.rate_card) if args.rate_card else None,
            host=args.host, port=args.port, dev=args.dev,
        ))
    except (SettingsError, MeteringError) as exc:
        return _fail(getattr(exc, "message", str(exc)))
    syncer = None
    if args.lake or args.node_id:
        from metering.lake import LakeSyncer

        try:
            if not (args.lake and args.node_id):
                raise MeteringError("--lake and --node-id go together: the lake directory and this node's id in it")
            syncer = LakeSyncer(store, Path(args.lake), args.node_id, interval=args.lake_interval).start()
        except MeteringError as exc:
            store.close()
            return _fail(exc.message)
        print(f"metering: exporting to the lake {args.lake} as node {args.node_id} every {args.lake_interval:g} s",
              flush=True)
    if generated:
        print("Development tokens (shown once; set them in the environment to keep them):", flush=True)
        for name, value in generated.items():
            print(f"  {name}={value}", flush=True)
    print(f"metering: serving {settings.db_path} on http://{settings.host}:{settings.port} "
          f"(API docs at /docs)", flush=True)
    return _run_server(settings, store, args.log_level, generated_token=generated.get("METERING_ADMIN_TOKEN"),
                       before_close=syncer.stop if syncer else None)


def _open_for_serving(settings: Settings) -> tuple[Settings, dict[str, str], Any]:
    """Validate the settings for serving (generating dev tokens) and open the store."""
    from metering.services.context import open_store

    settings, generated = settings.for_serving()
    return settings, generated, open_store(settings)


def _run_server(settings: Settings, store: Any, log_level: str, *, generated_token: str | None = None,
                before_close: Any = None) -> int:
    """Serve the app on an open store until stopped; calls `before_close`, then closes the store. While it
    runs, a file beside the database names the server (and a generated admin token), so CLI commands on
    the same file go through it instead of stopping at the lock (metering.backends.ServerFile)."""
    import gc

    import uvicorn

    from metering.api.app import create_app
    from metering.backends import ServerFile

    app = create_app(settings, store=store)
    # A 1,000-record body is ~15,000 new objects, which set off the collector's full passes over
    # every object of the process many times a request (a quarter of the server's time in a profile
    # of batch ingest). Objects alive now (modules, the app) are frozen out of those passes, and the
    # young generation is collected every 50,000 allocations instead of 700.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    if threading.current_thread() is threading.main_thread():
        # uvicorn shuts down gracefully on SIGTERM, then raises it again with the handler it found: with
        # this one the process leaves through the `finally` below (store closed, server file withdrawn)
        # instead of dying in the middle of it. Exit status 143 (128 + SIGTERM), as if it had died.
        signal.signal(signal.SIGTERM, _exit_on_signal)
    announced = ServerFile.announce(settings.db_path, host=settings.host, port=settings.port, token=generated_token)
    try:
        uvicorn.run(app, host=settings.host, port=settings.port, log_level=log_level, access_log=False)
    finally:
        if before_close is not None:
            before_close()
        announced.withdraw()
        store.close()
    return 0


def _exit_on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def cmd_demo(args: argparse.Namespace) -> int:
    import time

    from metering import demo
    from metering.services.context import Context

    started = time.perf_counter()
    try:
        settings, generated, store = _open_for_serving(  # the default database, as serve and the CLI use
            Settings.from_env(db_path=Path(args.db) if args.db else None, host=args.host, port=args.port, dev=True))
    except (SettingsError, MeteringError) as exc:
        return _fail(getattr(exc, "message", str(exc)))
    existing = store.record_count()
    if existing:
        print(f"metering demo: reusing {existing:,} records in {settings.db_path}", flush=True)
    else:
        counts = demo.build(Context(store, settings), days=args.days, progress=not args.quiet)
        print(f"metering demo: built {counts['records']:,} records from {counts['keys']} keys in "
              f"{counts['accounts']} accounts in {time.perf_counter() - started:.1f} s", flush=True)
    if args.no_serve:
        store.close()
        return 0
    url = f"http://{settings.host}:{settings.port}/dashboard/"
    print(f"\nDashboard: {url}", flush=True)
    print(f"  admin token:  {settings.admin_token}", flush=True)
    if store.key(demo.KEYS[0]) is not None:  # a file that held other data before keeps it, without demo keys
        print(f"  key token:    {demo.demo_secret(demo.KEYS[0])}  (sees only {demo.KEYS[0]})", flush=True)
    if generated.get("METERING_INGEST_TOKEN"):
        print(f"  ingest token: {settings.ingest_token}", flush=True)
    print("CLI commands in another terminal (`metering report daily`) go through this server.", flush=True)
    return _run_server(settings, store, args.log_level, generated_token=generated.get("METERING_ADMIN_TOKEN"))


# --- import ------------------------------------------------------------------------------------------


PARQUET_CHUNK = 1_000_000  # rows per transaction when a Parquet file goes into the database file directly


def _read_items(path: Path, chunk: int, *, tables: bool = False) -> Iterator[Any]:
    """Yield chunks of raw records (lists of dicts) from NDJSON, CSV or Parquet; with `tables`,
    a Parquet file's chunks are Arrow tables, checked a column at a time by the backend."""
    import orjson

    from metering.services.ingest import BadLine

    suffix = path.suffix.lower()
    if tables and suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=PARQUET_CHUNK):
            yield pa.Table.from_batches([batch])
        return
    if suffix in (".ndjson", ".jsonl", ".json"):
        batch: list[Any] = []
        with path.open("rb") as handle:
            for lineno, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    batch.append(orjson.loads(line))
                except orjson.JSONDecodeError as exc:
                    batch.append(BadLine(f"line {lineno}: not valid JSON: {exc}", line.rstrip(b"\r\n")))
                if len(batch) >= chunk:
                    yield batch
                    batch = []
        if batch:
            yield batch
        return
    if suffix not in (".csv", ".parquet"):
        raise MeteringError(f"{path}: unknown file type {suffix!r} (use .ndjson, .jsonl, .csv or .parquet)")
    import polars as pl

    frame = pl.read_csv(path, infer_schema_length=10_000) if suffix == ".csv" else pl.read_parquet(path)
    for part in frame.iter_slices(chunk):
        yield [_tabular_row(row) for row in part.iter_rows(named=True)]


def _tabular_row(row: dict[str, Any]) -> dict[str, Any]:
    """A CSV/Parquet row -> a record dict: nulls mean absent, JSON text in tags/usage is decoded,
    datetimes become RFC 3339 text (naive ones stay naive, and are rejected as such)."""
    import datetime as dt

    import orjson

    out: dict[str, Any] = {}
    for name, value in row.items():
        if value is None or value == "":
            continue
        if name in ("tags", "usage") and isinstance(value, str):
            with contextlib.suppress(orjson.JSONDecodeError):  # left as text; validation names the field
                value = orjson.loads(value)
        elif isinstance(value, dt.datetime):
            value = value.isoformat()
        out[name] = value
    return out


def cmd_import(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from metering.services.ingest import MAX_RECORDS

    settings = _settings(args)
    paths = [Path(p) for p in args.files]
    for path in paths:
        if not path.is_file():
            return _fail(f"{path}: no such file")
    totals = {"accepted": 0, "duplicates": 0, "rejected": 0}
    shown = 0
    try:
        backend = _backend(settings, args)
    except MeteringError as exc:
        return _fail(exc.message)
    try:
        with tqdm(unit=" records", desc="import", file=sys.stderr, disable=args.quiet) as bar:
            for path in paths:
                offset = 0
                direct = hasattr(backend, "ingest_table")
                for items in _read_items(path, min(args.batch_size, MAX_RECORDS), tables=direct):
                    result = backend.ingest(items) if isinstance(items, list) else backend.ingest_table(items, _tabular_row)
                    for name in totals:
                        totals[name] += result[name]
                    for error in result["errors"]:
                        if shown < args.show_errors:
                            print(f"{path}: record {offset + error['index'] + 1}: {error['error']}", file=sys.stderr)
                            shown += 1
                    offset += len(items)
                    bar.update(len(items))
    except MeteringError as exc:
        return _fail(exc.message)
    finally:
        backend.close()
    print(f"accepted {totals['accepted']}, duplicates {totals['duplicates']}, rejected {totals['rejected']}")
    return EXIT_REJECTED if totals["rejected"] else 0


# --- keys and rates ------------------------------------------------------------------------------------


def cmd_keys_add(args: argparse.Namespace) -> int:
    body = {"api_key_id": args.api_key_id, "account_id": args.account, "name": args.name, "secret": args.secret}
    return _with_backend(args, lambda b: _print_json(b.add_key({k: v for k, v in body.items() if v is not None})))


def cmd_keys_list(args: argparse.Namespace) -> int:
    def show(backend: Any) -> None:
        keys = backend.list_keys()
        print(f"{'api_key_id':<32} {'account_id':<24} name")
        for key in keys:
            print(f"{key['api_key_id']:<32} {key['account_id']:<24} {key.get('name') or ''}")

    return _with_backend(args, show)


def cmd_rates_list(args: argparse.Namespace) -> int:
    def show(backend: Any) -> None:
        card = backend.rates()
        print("USD per 1M tokens (current / list); web search per 1,000 requests")
        for model in card["models"]:
            if model.get("aliases"):
                print(f"{model['model']}  aliases: {', '.join(model['aliases'])}")
            for v in model["versions"]:
                parts = [f"{name} {v[name]['current']}/{v[name]['list']}"
                         for name in ("input", "cached_input", "output", "cache_write", "thinking", "web_search")
                         if v.get(name)]
                print(f"{model['model']}  from {v['effective_from']}  " + ", ".join(parts))

    return _with_backend(args, show)


# The formats each report exists in (the server's, services.reports.*_FORMATS; a test keeps them equal):
# argparse offers only these, so `report focus --format xlsx` is refused before any work.
REPORT_FORMATS = {"daily": ("json", "csv", "parquet", "xlsx"), "statement": ("json", "csv", "xlsx"),
                  "focus": ("csv", "parquet")}
BINARY_FORMATS = ("parquet", "xlsx")


def cmd_report(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"format": args.format}
    if args.kind == "daily":
        params.update(start=args.start, end=args.end, tz=args.tz or "UTC", group_by=args.group_by)
    elif args.kind == "statement":
        params.update(account=args.account, month=args.month, tz=args.tz)
    else:
        params.update(start=args.start, end=args.end)

    def write(backend: Any) -> None:
        body = backend.report(args.kind, params)
        if args.output:
            Path(args.output).write_bytes(body)
            print(f"wrote {args.output} ({len(body):,} bytes)", file=sys.stderr)
        else:
            _write_out(body + (b"\n" if args.format == "json" else b""))

    if args.format in BINARY_FORMATS and not args.output:
        return _fail(f"--format {args.format} is binary: give --output FILE")
    if args.engine == "spark" or args.lake or args.spark_master:
        if args.engine != "spark" or not args.lake:
            return _fail("--engine spark and --lake DIR go together (--spark-master URL is optional)")
        if args.url:
            return _fail("--engine spark reads the lake itself; drop --url")
        try:
            from metering.backends import LakeBackend

            write(LakeBackend(args.lake, args.spark_master, billing_tz=Settings.from_env().billing_tz))
        except MeteringError as exc:
            return _fail(exc.message)
        return 0
    return _with_backend(args, write)


def cmd_reprice(args: argparse.Namespace) -> int:
    body = {"start": args.start, "end": args.end, "tz": args.tz, "dry_run": args.dry_run}

    def show(backend: Any) -> None:
        result = backend.reprice(body)
        t = result["totals"]
        verb = "would change" if result["dry_run"] else "changed"
        print(f"{'dry run: ' if result['dry_run'] else ''}{verb} {t['changed']} of {t['records']} records in "
              f"[{result['start']}, {result['end']})")
        print(f"{'api_key_id':<24} {'model':<24} {'changed':>8} {'cost before':>16} {'cost after':>16} {'delta':>16}")
        for c in result["changes"]:
            if c["changed"]:
                print(f"{c['api_key_id']:<24} {c['model']:<24} {c['changed']:>8} {c['cost_before']:>16} "
                      f"{c['cost_after']:>16} {c['cost_delta']:>16}")
        print(f"total: cost {t['cost_before']} -> {t['cost_after']} (delta {t['cost_delta']}), list "
              f"{t['list_cost_before']} -> {t['list_cost_after']}, unpriced {t['unpriced_before']} -> "
              f"{t['unpriced_after']}")
        if not result["dry_run"]:
            print(f"audit entry {result['run_id']}")

    return _with_backend(args, show)


def cmd_reconcile(args: argparse.Namespace) -> int:
    import orjson

    from metering import reconcile as rc

    if args.format == "xlsx" and not args.output:
        return _fail("--format xlsx is binary: give --output FILE")
    pages: list[Any] = []
    for name in args.files:
        path = Path(name)
        if not path.is_file():
            return _fail(f"{path}: no such file")
        try:
            pages += rc.pages_of(orjson.loads(path.read_bytes()))
        except orjson.JSONDecodeError as exc:
            return _fail(f"{path}: not valid JSON: {exc}")
        except MeteringError as exc:
            return _fail(f"{path}: {exc.message}")
    params = {"provider": args.provider, "start": args.start, "end": args.end, "tolerance": args.tolerance,
              "models": args.models, "split_by": args.split_by, "match_to": args.match_to, "mapping": args.map}
    outcome: dict[str, Any] = {}

    def run(backend: Any) -> None:
        result = backend.reconcile(pages if len(pages) > 1 else pages[0], params)
        outcome.update(result["summary"])
        body = rc.render(result, args.format)
        if args.output:
            Path(args.output).write_bytes(body)
            print(f"wrote {args.output} ({len(body):,} bytes)", file=sys.stderr)
        else:
            _write_out(body + (b"\n" if args.format == "json" else b""))
        for row in result["rows"]:
            if row["status"] == "drift":
                where = f"{row['date']} {row['model']}" + (f" {row['group']}" if "group" in row else "")
                print(f"drift: {where}: {'; '.join(row['reasons'])}", file=sys.stderr)

    code = _with_backend(args, run)
    if code:
        return code
    s = outcome
    print(f"{s['provider']} [{s['start']}, {s['end']}): {s['rows']} rows, {s['match']} match, {s['drift']} drift; "
          f"cost {s['provider_cost']} (provider) vs {s['ledger_cost']} (ledger), difference {s['cost_difference']} USD",
          file=sys.stderr)
    return EXIT_REJECTED if s["drift"] else 0


def cmd_periods(args: argparse.Namespace) -> int:
    """`periods close --month M` and `periods list`."""

    def close(backend: Any) -> None:
        result = backend.periods("close", args.month)
        p = result["period"]
        verb = "closed" if result["closed_now"] else "already closed (nothing changed)"
        print(f"{p['month']} ({p['tz']}) {verb}: {p['accounts']} accounts, {p['statement_lines']} statement lines, "
              f"{p['focus_rows']} FOCUS rows; billed {p['amount']} USD, of which corrections {p['correction_amount']}"
              f"; unpriced requests {p['unpriced_requests']}; closed at {p['closed_at']} by {p['closed_by']}")

    def show(backend: Any) -> None:
        result = backend.periods("list")
        print(f"billing time zone {result['billing_tz']}; auto close: "
              + (f"{result['auto_close_days']} days after month end" if result["auto_close_days"] is not None
                 else "off"))
        print(f"{'month':<8} {'closed_at':<21} {'by':<9} {'accounts':>8} {'billed USD':>20} {'corrections USD':>20}")
        for p in result["data"]:
            print(f"{p['month']:<8} {p['closed_at']:<21} {p['closed_by']:<9} {p['accounts']:>8} {p['amount']:>20} "
                  f"{p['correction_amount']:>20}")
        nxt = result["next_to_close"]
        if nxt:
            print(f"next to close: {nxt['month']} ({'closable now' if nxt['closable'] else 'ends ' + nxt['ends_at']})")

    return _with_backend(args, close if args.periods_command == "close" else show)


def _scope(text: str) -> dict[str, Any]:
    """api_key_id=K | account_id=A | tag:NAME=VALUE | all"""
    if text == "all":
        return {"all": True}
    name, sep, value = text.partition("=")
    if not sep:
        raise MeteringError(f"--scope: expected api_key_id=K, account_id=A, tag:NAME=VALUE or all, got {text!r}")
    if name.startswith("tag:"):
        return {"tag": {name[4:]: value}}
    return {name: value}


def cmd_budgets(args: argparse.Namespace) -> int:
    action = args.budgets_command
    arg: Any = None
    if action == "add":
        try:
            arg = {"scope": _scope(args.scope), "amount": args.amount, "period": args.period, "tz": args.tz,
                   "basis": args.basis, "forecast": args.forecast}
        except MeteringError as exc:
            return _fail(exc.message)
        if args.thresholds:
            arg["thresholds"] = [t.strip() for t in args.thresholds.split(",")]
        if args.webhook_url:
            arg["webhook_url"] = args.webhook_url
        if args.webhook_secret:
            arg["webhook_secret"] = args.webhook_secret
    elif action in ("show", "delete"):
        arg = args.budget_id
    elif action == "status":
        arg = args.api_key_id

    def act(backend: Any) -> None:
        result = backend.budgets(action, arg)
        if action == "delete":
            print(f"deleted {arg}")
        else:
            _print_json(result)

    return _with_backend(args, act)


def _write_out(data: bytes) -> None:
    """All of `data` to standard output. Unbuffered (PYTHONUNBUFFERED=1), sys.stdout.buffer is the raw
    file, whose write may take only part of it (what a pipe has room for) and say so only by its count."""
    view = memoryview(data)
    while view:
        view = view[sys.stdout.buffer.write(view) or 0:]


def _print_json(data: Any) -> None:
    import json

    print(json.dumps(data, indent=2))


def _with_backend(args: argparse.Namespace, action: Any) -> int:
    try:
        backend = _backend(_settings(args), args)
    except MeteringError as exc:
        return _fail(exc.message)
    try:
        action(backend)
    except MeteringError as exc:
        return _fail(exc.message)
    finally:
        backend.close()
    return 0


def _backend(settings: Settings, args: argparse.Namespace) -> Any:
    """--url: the server's API. Else the database file; when a server holds it (the lock), that
    server's API, with the token the environment or the server's file gives (else a message naming
    the exact command)."""
    from metering.backends import LocalBackend, RemoteBackend, ServerFile

    if settings.url:
        return RemoteBackend(settings.url, token=settings.client_token or settings.admin_token)
    try:
        return LocalBackend.open(settings)
    except DatabaseLocked as exc:
        server = ServerFile.find(settings.db_path)
        if server is None:
            raise
        token = settings.client_token or settings.admin_token or server.token
        if not token:
            command = " ".join(["metering", *map(shlex.quote, args.argv), "--url", server.url])
            raise DatabaseLocked(f"{exc.message}. It is served at {server.url}: run `METERING_TOKEN=<its admin "
                                 f"token> {command}`") from None
        print(f"metering: {settings.db_path} is held by the server at {server.url}; going through it",
              file=sys.stderr)
        return RemoteBackend(server.url, token=token)


# --- the lake ----------------------------------------------------------------------------------------------


def cmd_lake_sync(args: argparse.Namespace) -> int:
    from metering.lake import sync_file

    try:
        result = sync_file(Path(args.db) if args.db else Settings.from_env().db_path, Path(args.lake), args.node_id)
    except MeteringError as exc:
        return _fail(exc.message)
    print(result.summary())
    return 0


# --- the parser --------------------------------------------------------------------------------------------


def _data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", help="database file (default: METERING_DB or data/metering.duckdb)")
    parser.add_argument("--url", help="go through a running server (default: METERING_URL)")
    parser.add_argument("--token", help="bearer token for --url (default: METERING_TOKEN or METERING_ADMIN_TOKEN)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metering", description="Usage metering and cost analytics for LLM APIs.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--db", help="database file (default: METERING_DB or data/metering.duckdb)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--dev", action="store_true", help="generate missing tokens and print them once")
    serve.add_argument("--rate-card", help="rate card TOML (default: METERING_RATE_CARD or data/rate_card.toml)")
    serve.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    serve.add_argument("--lake", help="export committed records continuously into this lake directory")
    serve.add_argument("--node-id", help="this node's id in the lake (letters, digits, - and _)")
    serve.add_argument("--lake-interval", type=float, default=2.0, help="seconds between lake exports (default 2)")
    serve.set_defaults(func=cmd_serve)

    dem = sub.add_parser("demo", help="build a demo database with realistic traffic (once), then serve it")
    dem.add_argument("--db", help="database file (default: METERING_DB or data/metering.duckdb, as serve and the "
                     "CLI use; the data is built only into an empty file)")
    dem.add_argument("--host", default="127.0.0.1")
    dem.add_argument("--port", type=int, default=8000)
    dem.add_argument("--days", type=int, default=60, help="days of traffic to generate (default 60)")
    dem.add_argument("--no-serve", action="store_true", help="build (or reuse) the data and stop")
    dem.add_argument("--quiet", action="store_true", help="no progress bar")
    dem.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])
    dem.set_defaults(func=cmd_demo)

    imp = sub.add_parser("import", help="import usage records from NDJSON, CSV or Parquet files")
    imp.add_argument("files", nargs="+", metavar="FILE")
    _data_options(imp)
    imp.add_argument("--rate-card", help="rate card TOML to seed a new database with")
    imp.add_argument("--batch-size", type=int, default=10_000)
    imp.add_argument("--show-errors", type=int, default=20, help="print at most this many rejected records")
    imp.add_argument("--quiet", action="store_true", help="no progress bar")
    imp.set_defaults(func=cmd_import)

    keys = sub.add_parser("keys", help="register and list API keys").add_subparsers(dest="keys_command", required=True)
    add = keys.add_parser("add", help="register a key; without --secret one is generated and printed once")
    add.add_argument("api_key_id")
    add.add_argument("--account", required=True, help="account the key belongs to")
    add.add_argument("--name")
    add.add_argument("--secret", help="the key's secret (stored only as a SHA-256 digest)")
    _data_options(add)
    add.set_defaults(func=cmd_keys_add)
    lst = keys.add_parser("list", help="list registered keys")
    _data_options(lst)
    lst.set_defaults(func=cmd_keys_list)

    reports = sub.add_parser("report", help="finance reports: daily, statement, focus").add_subparsers(
        dest="kind", required=True)
    daily = reports.add_parser("daily", help="the daily cost report (default: the last 30 local days)")
    daily.add_argument("--start", help="local date, inclusive")
    daily.add_argument("--end", help="local date, exclusive")
    daily.add_argument("--group-by", default=None, help="comma list of account_id, api_key_id, model, endpoint")
    statement = reports.add_parser("statement", help="an account's monthly statement")
    statement.add_argument("--account", required=True, help="the account")
    statement.add_argument("--month", required=True, help="YYYY-MM")
    focus = reports.add_parser("focus", help="the FOCUS 1.2 export")
    focus.add_argument("--start", required=True, help="UTC date, inclusive")
    focus.add_argument("--end", required=True, help="UTC date, exclusive")
    for kind, parser_ in (("daily", daily), ("statement", statement), ("focus", focus)):
        if kind == "daily":
            parser_.add_argument("--tz", default="UTC", help="IANA time zone of the days (default UTC)")
        elif kind == "statement":
            parser_.add_argument("--tz", default=None, help="IANA time zone of the month (default: the billing time zone)")
        parser_.add_argument("--format", default="csv", choices=REPORT_FORMATS[kind])
        parser_.add_argument("--output", "-o", help="file to write (default: standard output)")
        parser_.add_argument("--engine", default="duckdb", choices=["duckdb", "spark"],
                             help="duckdb: the database file or server (default); spark: the lake, with Apache Spark")
        parser_.add_argument("--lake", help="--engine spark: the lake directory (or s3a://... on a cluster)")
        parser_.add_argument("--spark-master", help="--engine spark: the Spark master URL (default local[*])")
        _data_options(parser_)
        parser_.set_defaults(func=cmd_report)

    rep = sub.add_parser("reprice", help="re-rate a range with the current rate card")
    rep.add_argument("--start", required=True, help="date or RFC 3339 timestamp, inclusive")
    rep.add_argument("--end", required=True, help="date or RFC 3339 timestamp, exclusive")
    rep.add_argument("--tz", default="UTC", help="time zone of dates given as --start/--end")
    rep.add_argument("--dry-run", action="store_true", help="show the change per key and model; write nothing")
    _data_options(rep)
    rep.set_defaults(func=cmd_reprice)

    rec = sub.add_parser("reconcile", help="compare a provider's usage report with the ledger (exit 1 on drift)")
    rec.add_argument("files", nargs="+", metavar="FILE", help="the report as its admin API returns it: a page or an "
                     "array of pages per file")
    rec.add_argument("--provider", required=True, choices=["openai", "anthropic"])
    rec.add_argument("--start", required=True, help="UTC date, inclusive")
    rec.add_argument("--end", required=True, help="UTC date, exclusive")
    rec.add_argument("--tolerance", help="relative, e.g. 0.001 for 0.1%% (default 0: exact)")
    rec.add_argument("--models", help="comma list: compare only these models")
    rec.add_argument("--split-by", help="also split by the provider's project_id, workspace_id or api_key_id")
    rec.add_argument("--match-to", help="our side of --split-by: api_key_id (default) or tag:NAME")
    rec.add_argument("--map", action="append", metavar="ID=VALUE", help="a provider id -> our value (repeatable)")
    rec.add_argument("--format", default="csv", choices=["json", "csv", "xlsx"])
    rec.add_argument("--output", "-o", help="file to write (default: standard output)")
    _data_options(rec)
    rec.set_defaults(func=cmd_reconcile)

    per = sub.add_parser("periods", help="billing periods: close a month, list closed months").add_subparsers(
        dest="periods_command", required=True)
    pclose = per.add_parser("close", help="close a billing month: its statements and FOCUS rows never change again")
    pclose.add_argument("--month", required=True, help="YYYY-MM (billing time zone); months close in order")
    plist = per.add_parser("list", help="closed months, the first open one, the next to close")
    for parser_ in (pclose, plist):
        _data_options(parser_)
        parser_.set_defaults(func=cmd_periods)

    bud = sub.add_parser("budgets", help="budgets and alerts").add_subparsers(dest="budgets_command", required=True)
    badd = bud.add_parser("add", help="create a budget")
    badd.add_argument("--scope", required=True, help="api_key_id=K, account_id=A, tag:NAME=VALUE or all")
    badd.add_argument("--amount", required=True, help="USD, e.g. 100.00")
    badd.add_argument("--period", default="month", choices=["day", "week", "month"])
    badd.add_argument("--tz", default="UTC")
    badd.add_argument("--basis", default="cost", choices=["cost", "list_cost"])
    badd.add_argument("--thresholds", help="comma list of fractions (default 0.5,0.8,1.0)")
    badd.add_argument("--forecast", action="store_true", help="also alert on a projected overrun")
    badd.add_argument("--webhook-url")
    badd.add_argument("--webhook-secret", help="whsec_... (default: one is generated and printed once)")
    bshow = bud.add_parser("show", help="one budget")
    bshow.add_argument("budget_id")
    bdel = bud.add_parser("delete", help="delete a budget")
    bdel.add_argument("budget_id")
    bstatus = bud.add_parser("status", help="every budget covering a key, with spend and projection")
    bstatus.add_argument("api_key_id")
    bud.add_parser("list", help="list budgets")
    bud.add_parser("check", help="evaluate every budget now and send what is due")
    bud.add_parser("alerts", help="alerts with their delivery status")
    for parser_ in (badd, bshow, bdel, bstatus, *[bud.choices[n] for n in ("list", "check", "alerts")]):
        _data_options(parser_)
        parser_.set_defaults(func=cmd_budgets)

    lake = sub.add_parser("lake", help="the ledger as an open Parquet lake").add_subparsers(dest="lake_command",
                                                                                           required=True)
    lsync = lake.add_parser("sync", help="export the committed records the lake does not have yet")
    lsync.add_argument("--db", help="database file (default: METERING_DB or data/metering.duckdb)")
    lsync.add_argument("--lake", required=True, help="the lake directory (created if new)")
    lsync.add_argument("--node-id", required=True, help="this database's node id in the lake")
    lsync.set_defaults(func=cmd_lake_sync)

    rates = sub.add_parser("rates", help="the rate card").add_subparsers(dest="rates_command", required=True)
    rlist = rates.add_parser("list", help="list models and their price versions")
    _data_options(rlist)
    rlist.set_defaults(func=cmd_rates_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        code = args.func(args)
        sys.stdout.flush()  # inside the try: a reader gone (`| head`) is met here, not at exit
    except BrokenPipeError:
        # The reader closed the pipe: stop quietly, as `cat` would (128 + SIGPIPE). Standard output
        # goes to /dev/null so the interpreter's last flush at exit does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE
    return code


if __name__ == "__main__":
    sys.exit(main())
