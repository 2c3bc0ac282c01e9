"""Documents for people and tools: a frame and its metadata, rendered as JSON, CSV, Parquet or XLSX.

Money stays exact in JSON (decimal strings), CSV and Parquet (DECIMAL(38, 12)); XLSX shows it
currency-formatted, and Excel keeps numbers as binary floats, so the exact figures are the other
formats'. No cell of a workbook is ever a formula made from data.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import polars as pl

from metering.errors import BadRequest
from metering.ratecard import format_decimal

MONEY = pl.Decimal(38, 12)
MEDIA_TYPES = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


def check_format(fmt: str, allowed: tuple[str, ...]) -> str:
    if fmt not in allowed:
        raise BadRequest(f"format: must be one of {', '.join(allowed)}, got {str(fmt)[:40]!r}")
    return fmt


@dataclass
class Document:
    frame: pl.DataFrame
    meta: dict[str, Any]



def _json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format_decimal(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    return value


def to_json(doc: Document) -> dict[str, Any]:
    rows = [{k: _json_value(v) for k, v in row.items()} for row in doc.frame.to_dicts()]
    out = {k: _json_value(v) for k, v in doc.meta.items()}
    if "row_type" in doc.frame.columns:
        out["rows"] = [r for r in rows if r["row_type"] != "total"]
        totals = [r for r in rows if r["row_type"] == "total"]
        out["totals"] = totals[0] if totals else None
    else:
        out["lines"] = rows
    return out


def render(doc: Document, fmt: str) -> bytes:
    if fmt == "json":
        import orjson

        return orjson.dumps(to_json(doc))
    if fmt == "csv":
        frame = doc.frame
        head = ""
        if doc.meta.get("document") == "statement":
            frame = _with_statement_total(doc)
            head = "".join(f"# {key}: {value}\n" for key, value in header_items(doc.meta))
        return (head + frame.write_csv(datetime_format="%Y-%m-%dT%H:%M:%SZ")).encode()
    if fmt == "parquet":
        buffer = io.BytesIO()
        doc.frame.write_parquet(buffer)
        return buffer.getvalue()
    if fmt == "xlsx":
        return _xlsx(doc)
    raise BadRequest(f"format: unknown {fmt!r}")


HEADER_KEYS = ("document", "account_id", "month", "tz", "period_start", "period_end", "currency", "rounding", "status",
               "closed_at", "requests", "unpriced_requests")


def header_items(meta: dict[str, Any]) -> list[tuple[str, str]]:
    """A statement's header as (key, value) text pairs: CSV `# key: value` lines, the XLSX rows above
    the table. Values are one line each."""
    out = []
    for key in HEADER_KEYS:
        value = _json_value(meta.get(key))
        text = "" if value is None else str(value)
        out.append((key, text.replace("\r", " ").replace("\n", " ")))
    return out


def _with_statement_total(doc: Document) -> pl.DataFrame:
    t = doc.meta["totals"]
    total = pl.DataFrame([{"description": "TOTAL", "amount": t["amount"], "amount_rounded": t["amount_rounded"],
                           "list_amount": t["list_amount"], "list_amount_rounded": t["list_amount_rounded"]}],
                         schema={"description": pl.String, "amount": MONEY, "amount_rounded": pl.Decimal(38, 2),
                                 "list_amount": MONEY, "list_amount_rounded": pl.Decimal(38, 2)})
    return pl.concat([doc.frame, total], how="diagonal_relaxed")


MONEY_FORMAT = '"$"#,##0.00####'
CENTS_FORMAT = '"$"#,##0.00'
SHARE_FORMAT = "0.00%"
COUNT_FORMAT = "#,##0"


def _xlsx(doc: Document) -> bytes:
    """A workbook finance can open: currency-formatted money, a filterable header, frozen panes; a
    statement's header rows above the table; the totals row below the table, outside it, so sorting or
    a table subtotal never takes it for data. Excel stores numbers as binary floats; the exact figures
    are in the CSV, Parquet and JSON."""
    frame = doc.frame
    header: list[tuple[str, str]] = []
    totals: dict[str, Any] | None = None
    if doc.meta.get("document") == "statement":
        header = header_items(doc.meta)
        totals = _with_statement_total(doc).row(-1, named=True)
    elif "row_type" in frame.columns:
        rows = frame.filter(pl.col("row_type") == "total")
        totals = rows.row(0, named=True) if rows.height else None
        frame = frame.filter(pl.col("row_type") != "total")
    formats: dict[str, str] = {}
    for name, dtype in frame.schema.items():
        if name.endswith("_rounded"):
            formats[name] = CENTS_FORMAT
        elif isinstance(dtype, pl.Decimal) and name not in ("quantity",):
            formats[name] = MONEY_FORMAT
        elif name.endswith(("_share", "_rate")):
            formats[name] = SHARE_FORMAT
        elif dtype.is_integer():
            formats[name] = COUNT_FORMAT
    excel = frame.with_columns(pl.col(n).cast(pl.Float64) for n, t in frame.schema.items() if isinstance(t, pl.Decimal))
    top = len(header) + 2 if header else 0  # a title, the header rows, a blank row
    buffer = io.BytesIO()
    import xlsxwriter

    # Strings stay strings: a model or key id such as =HYPERLINK(...) must never become a live formula.
    options = {"in_memory": True, "strings_to_formulas": False, "strings_to_urls": False, "strings_to_numbers": False}
    with xlsxwriter.Workbook(buffer, options) as workbook:
        if doc.meta.get("closed_at"):  # a closed document is the same bytes on every download
            workbook.set_properties({"created": datetime.fromisoformat(doc.meta["closed_at"]).replace(tzinfo=None)})
        sheet = workbook.add_worksheet(doc.meta.get("document", doc.meta.get("report", "report")))
        bold = workbook.add_format({"bold": True})
        if header:
            sheet.write_string(0, 0, f"Statement for account {doc.meta['account_id']}, {doc.meta['month']} "
                               f"({doc.meta['tz']})", bold)
            for i, (key, value) in enumerate(header, start=1):
                sheet.write_string(i, 0, key, bold)
                sheet.write_string(i, 1, value)
        excel.write_excel(workbook, worksheet=sheet, position=(top, 0), column_formats=formats,
                          autofilter=True, autofit=True, freeze_panes=(top + 1, 0), table_style=None,
                          dtype_formats={pl.Date: "yyyy-mm-dd", pl.Datetime: "yyyy-mm-dd hh:mm"})
        if totals is not None:
            _write_totals(workbook, sheet, top + 1 + frame.height, list(frame.columns), totals, formats)
    return buffer.getvalue()


def _write_totals(workbook: Any, sheet: Any, row: int, columns: list[str], totals: dict[str, Any],
                  formats: dict[str, str]) -> None:
    """The totals row right below the table (outside its range), in bold."""
    styles: dict[str, Any] = {}
    for col, name in enumerate(columns):
        value = totals.get(name)
        if value is None:
            continue
        fmt = formats.get(name)
        if fmt not in styles:
            styles[fmt] = workbook.add_format({"bold": True, **({"num_format": fmt} if fmt else {})})
        if isinstance(value, (Decimal, int, float)) and not isinstance(value, bool):
            sheet.write_number(row, col, float(value), styles[fmt])
        else:
            sheet.write_string(row, col, str(value), styles[fmt])
