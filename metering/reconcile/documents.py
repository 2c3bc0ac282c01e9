"""The reconciliation as a document: JSON, CSV with a metadata header, XLSX."""

from __future__ import annotations

import io
from decimal import Decimal
from typing import Any

from metering.errors import BadRequest
from metering.reconcile.params import CLASSES, FORMATS

# --- documents ---------------------------------------------------------------------------------------


def flat_rows(result: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """One flat row per compared cell, for CSV and XLSX: columns in a fixed order."""
    split = result["summary"]["split"] is not None
    columns = ["date", "model", *(["group", "provider_ids"] if split else []), "status"]
    for n in CLASSES:
        columns += [f"provider_{n}", f"ledger_{n}", f"difference_{n}", f"relative_difference_{n}"]
    columns += ["ledger_thinking_tokens", "rate_version_id", "rate_effective_from", "provider_cost", "ledger_cost",
                "cost_difference", "cost_relative_difference", "reasons", "notes"]
    out = []
    for row in result["rows"]:
        flat: dict[str, Any] = {"date": row["date"], "model": row["model"], "status": row["status"]}
        if split:
            flat["group"] = row["group"]
            flat["provider_ids"] = " ".join(row["provider_ids"])
        for n in CLASSES:
            flat[f"provider_{n}"] = row["provider"][n]
            flat[f"ledger_{n}"] = row["ledger"][n]
            flat[f"difference_{n}"] = row["difference"][n]
            flat[f"relative_difference_{n}"] = row["relative_difference"][n]
        flat["ledger_thinking_tokens"] = row["ledger"]["thinking_tokens"]
        for n in ("rate_version_id", "rate_effective_from", "provider_cost", "ledger_cost", "cost_difference",
                  "cost_relative_difference"):
            flat[n] = row[n]
        flat["reasons"] = "; ".join(row["reasons"])
        flat["notes"] = "; ".join(row["notes"])
        out.append(flat)
    return columns, out


def header_lines(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The document's metadata, label and value, for the top of the CSV and XLSX."""
    split = summary["split"]
    lines = [
        ("document", f"provider usage reconciliation ({summary['provider']}: {summary['source']})"),
        ("period", f"{summary['start']} to {summary['end']} (UTC days, end exclusive)"),
        ("currency", "USD; costs at our rate card, exact to 1e-12 USD (not rounded)"),
        ("tolerance", f"{summary['tolerance']} ({summary['tolerance_rule']})"),
        ("cost rule", summary["cost_rule"]),
        ("result", f"{summary['status']}: {summary['match']} rows match, {summary['drift']} drift"),
        ("provider cost", summary["provider_cost"]),
        ("ledger cost", summary["ledger_cost"]),
        ("cost difference", summary["cost_difference"] + " (provider - ledger)"),
        ("not reported by the provider", ", ".join(summary["not_reported"]) or "-"),
        ("days not covered by the report", ", ".join(summary["days_not_covered"]) or "-"),
        ("unpriced models", ", ".join(summary["unpriced_models"]) or "-"),
        ("report pages", f"{summary['pages']} ({'complete' if summary['complete'] else 'has_more: true on the last'})"),
    ]
    if split:
        mapping = ", ".join(f"{k}={v}" for k, v in split["mapping"].items()) or "identity"
        lines.append(("split", f"{split['provider_field']} -> {split['ledger_field']} (map: {mapping})"))
    if summary["models"]:
        lines.append(("models", ", ".join(summary["models"])))
    return lines


def render_csv(result: dict[str, Any]) -> bytes:
    """`# label: value` metadata lines, then one header line and the rows. Money as exact decimals."""
    import csv

    buffer = io.StringIO()
    for label, value in header_lines(result["summary"]):
        buffer.write(f"# {label}: {value}\n".replace("\r", " "))
    columns, rows = flat_rows(result)
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buffer.getvalue().encode()


MONEY_FORMAT = '"$"#,##0.00####'
COUNT_FORMAT = "#,##0"
_MONEY_COLUMNS = ("provider_cost", "ledger_cost", "cost_difference")


def render_xlsx(result: dict[str, Any]) -> bytes:
    """A workbook: the metadata above, then a filterable table. Text from the data is written as text
    (never a formula or a link); counts as numbers; money as numbers in a currency format (Excel
    keeps binary floats: the exact figures are in the CSV and JSON)."""
    import xlsxwriter

    columns, rows = flat_rows(result)
    buffer = io.BytesIO()
    options = {"in_memory": True, "strings_to_formulas": False, "strings_to_urls": False, "strings_to_numbers": False}
    with xlsxwriter.Workbook(buffer, options) as workbook:
        sheet = workbook.add_worksheet("reconciliation")
        bold = workbook.add_format({"bold": True})
        money = workbook.add_format({"num_format": MONEY_FORMAT})
        count = workbook.add_format({"num_format": COUNT_FORMAT})
        header = header_lines(result["summary"])
        for i, (label, value) in enumerate(header):
            sheet.write_string(i, 0, label, bold)
            sheet.write_string(i, 1, value)
        top = len(header) + 1
        for j, name in enumerate(columns):
            sheet.write_string(top, j, name, bold)
        for i, row in enumerate(rows, start=top + 1):
            for j, name in enumerate(columns):
                value = row.get(name)
                if value is None:
                    continue
                if name in _MONEY_COLUMNS:
                    sheet.write_number(i, j, float(Decimal(value)), money)
                elif isinstance(value, int):
                    sheet.write_number(i, j, value, count)
                else:
                    sheet.write_string(i, j, str(value))
        sheet.autofilter(top, 0, top + len(rows), len(columns) - 1)
        sheet.freeze_panes(top + 1, 2)
        sheet.set_column(0, 0, 14)
        sheet.set_column(1, 1, 28)
        sheet.set_column(2, len(columns) - 1, 16)
    return buffer.getvalue()


MEDIA_TYPES = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


def render(result: dict[str, Any], fmt: str) -> bytes:
    if fmt == "json":
        import orjson

        return orjson.dumps(result)
    if fmt == "csv":
        return render_csv(result)
    if fmt == "xlsx":
        return render_xlsx(result)
    raise BadRequest(f"format: must be one of {', '.join(FORMATS)}, got {fmt!r}")

