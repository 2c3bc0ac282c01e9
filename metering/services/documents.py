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
        if doc.meta.get("document") == "statement":
            frame = _with_statement_total(doc)
        return frame.write_csv(datetime_format="%Y-%m-%dT%H:%M:%SZ").encode()
    if fmt == "parquet":
        buffer = io.BytesIO()
        doc.frame.write_parquet(buffer)
        return buffer.getvalue()
    if fmt == "xlsx":
        return _xlsx(doc)
    raise BadRequest(f"format: unknown {fmt!r}")


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
    """A workbook finance can open: currency-formatted money, a filterable header, frozen panes.
    Excel stores numbers as binary floats; the exact figures are in the CSV, Parquet and JSON."""
    frame = doc.frame
    title_rows = 0
    if doc.meta.get("document") == "statement":
        frame = _with_statement_total(doc)
        title_rows = 4
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
    buffer = io.BytesIO()
    import xlsxwriter

    # Strings stay strings: a model or key id such as =HYPERLINK(...) must never become a live formula.
    options = {"in_memory": True, "strings_to_formulas": False, "strings_to_urls": False, "strings_to_numbers": False}
    with xlsxwriter.Workbook(buffer, options) as workbook:
        sheet = workbook.add_worksheet(doc.meta.get("document", doc.meta.get("report", "report")))
        if title_rows:
            bold = workbook.add_format({"bold": True})
            sheet.write_string(0, 0, f"Statement for account {doc.meta['account_id']}, {doc.meta['month']} "
                               f"({doc.meta['tz']})", bold)
            sheet.write_string(1, 0, f"Period {doc.meta['period_start']} to {doc.meta['period_end']}, USD")
            sheet.write_string(2, 0, doc.meta["rounding"])
        excel.write_excel(workbook, worksheet=sheet, position=(title_rows, 0), column_formats=formats,
                          autofilter=True, autofit=True, freeze_panes=(title_rows + 1, 0), table_style=None,
                          dtype_formats={pl.Date: "yyyy-mm-dd", pl.Datetime: "yyyy-mm-dd hh:mm"})
    return buffer.getvalue()


