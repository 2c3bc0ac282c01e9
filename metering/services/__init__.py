"""The use cases: the one API the HTTP routers and the CLI both call.

Each module takes a `Context` (the store, the settings, the caches) and keyword arguments, checks
its input with the pure rules below it (records, ratecard, pricing, timewindows, budgets), reads and
writes through the store, and answers plain data:

    ingest     bodies and items -> checked, priced records -> the writer -> outcomes
    usage      the per-key usage API, one record, unpriced models
    keys       register and list API keys
    rates      the rate card and its versions
    budgets    budgets and their status, as each principal may see them
    alerts     thresholds, forecasts, anomalies; the outbox; the evaluation thread
    delivery   the webhook sender thread (signed, retried, pinned to checked addresses)
    reports    the daily report (Polars); statements and FOCUS through billing and focus
    sources    where documents read: the ledger and the closed periods, in one snapshot
    lines      priced lines per token class, checked against the ledger; rounding to cents
    calendar   billing months of the billing time zone; closed months and the first open one
    billing    monthly statements: usage, corrections of closed months, stored closed statements
    focus      the FOCUS 1.2 export: usage rows split by tag set, corrections, stored closed rows
    periods    period close (one transaction), the list, the scheduled close, the re-rating guard
    documents  rendering documents as JSON, CSV, Parquet, XLSX
    reprice    re-rating a range with the current rate card
"""

from metering.services.context import Context

__all__ = ["Context"]
