"""Finance reports over HTTP: daily (every format), statement, FOCUS 1.2, and re-rating."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta
from decimal import Decimal

import openpyxl
import polars as pl
import pyarrow.parquet as pq
import pytest

from tests.conftest import ADMIN, MODEL, NOW, auth, generate_records, get, ingest, ledger_cost, record

# --- daily ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("tz", "instants", "expected"), [
    ("UTC", ["2026-11-01T23:59:59Z", "2026-11-02T00:00:00Z"], {"2026-11-01": 1, "2026-11-02": 1}),
    ("America/New_York", ["2026-11-01T03:59:59Z", "2026-11-01T04:00:00Z", "2026-11-02T04:59:59Z",
                          "2026-11-02T05:00:00Z"], {"2026-10-31": 1, "2026-11-01": 2, "2026-11-02": 1}),
    ("America/New_York", ["2026-03-08T04:59:59Z", "2026-03-08T05:00:00Z", "2026-03-09T03:59:59Z",
                          "2026-03-09T04:00:00Z"], {"2026-03-07": 1, "2026-03-08": 2, "2026-03-09": 1}),
    ("Asia/Kolkata", ["2026-11-01T18:29:59Z", "2026-11-01T18:30:00Z"], {"2026-11-01": 1, "2026-11-02": 1}),
])
def test_daily_report_puts_records_in_their_local_day(client, tz, instants, expected):
    ingest(client, [record(f"t{i}", occurred_at=ts) for i, ts in enumerate(instants)])
    days = sorted(expected)
    end = (datetime.fromisoformat(days[-1]) + timedelta(days=1)).date().isoformat()
    body = get(client, "/v1/reports/daily", start=days[0], end=end, tz=tz).json()
    got: dict[str, int] = {}
    for row in body["rows"]:
        got[row["date"]] = got.get(row["date"], 0) + row["requests"]
    assert got == expected
    assert body["totals"]["requests"] == len(instants)


def test_a_late_record_lands_in_its_own_day(client, clock):
    ingest(client, [record("today"), record("late", occurred_at=(NOW - timedelta(days=6)).isoformat())])
    body = get(client, "/v1/reports/daily", start="2026-11-15", end="2026-11-26").json()
    dates = {r["date"]: r["requests"] for r in body["rows"]}
    assert dates == {"2026-11-19": 1, "2026-11-25": 1}


def test_daily_report_columns_and_totals(client, store, two_keys):
    ingest(client, generate_records(3000, seed=21))
    ingest(client, [record("acct", api_key_id="key-a")])
    body = get(client, "/v1/reports/daily", start="2026-11-01", end="2026-11-26").json()
    row = body["rows"][0]
    for column in ("date", "account_id", "api_key_id", "model", "requests", "input_tokens", "cached_tokens",
                   "cache_write_tokens", "uncached_input_tokens", "output_tokens", "thinking_tokens",
                   "web_search_requests", "cost", "list_cost", "savings", "savings_share", "cache_hit_rate",
                   "thinking_share", "unpriced_requests"):
        assert column in row
    assert {r["account_id"] for r in body["rows"]} == {"acct-1", "unassigned"}
    totals = body["totals"]
    assert Decimal(totals["cost"]) == sum(Decimal(r["cost"]) for r in body["rows"] if r["cost"] is not None) \
        == ledger_cost(store)[0]
    unpriced = [r for r in body["rows"] if r["model"] == "unpriced-model"]  # issue 14: unknown, never "0"
    assert unpriced and all(r["cost"] is None and r["list_cost"] is None and r["savings"] is None for r in unpriced)
    assert Decimal(totals["savings"]) == Decimal(totals["list_cost"]) - Decimal(totals["cost"])
    assert totals["uncached_input_tokens"] == (totals["input_tokens"] - totals["cached_tokens"]
                                               - totals["cache_write_tokens"])
    assert totals["cache_hit_rate"] == round(totals["cached_tokens"] / totals["input_tokens"], 6)


def test_daily_report_formats_agree(client, tmp_path):
    ingest(client, generate_records(500, seed=8))
    params = {"start": "2026-11-01", "end": "2026-11-26", "tz": "Europe/Berlin", "group_by": "model,api_key_id"}
    body = get(client, "/v1/reports/daily", **params).json()
    rows = list(csv.DictReader(io.StringIO(get(client, "/v1/reports/daily", format="csv", **params).text)))
    assert len(rows) == len(body["rows"]) + 1 and rows[-1]["row_type"] == "total"
    assert Decimal(rows[-1]["cost"]) == Decimal(body["totals"]["cost"])
    table = pq.read_table(io.BytesIO(get(client, "/v1/reports/daily", format="parquet", **params).content))
    assert str(table.schema.field("cost").type) == "decimal128(38, 12)"
    frame = pl.from_arrow(table)
    assert frame.filter(pl.col("row_type") == "day")["cost"].sum() == Decimal(body["totals"]["cost"])


def test_daily_report_xlsx_has_currency_formats_a_filter_and_frozen_panes(client, tmp_path):
    ingest(client, generate_records(300, seed=4))
    r = get(client, "/v1/reports/daily", start="2026-11-01", end="2026-11-26", format="xlsx")
    assert r.headers["content-type"].startswith("application/vnd.openxmlformats")
    path = tmp_path / "daily.xlsx"
    path.write_bytes(r.content)
    sheet = openpyxl.load_workbook(path).active
    header = [c.value for c in sheet[1]]
    assert header[:4] == ["date", "account_id", "api_key_id", "model"]
    assert sheet.freeze_panes == "A2"
    (table,) = sheet.tables.values()  # an Excel table: its header row carries the filter buttons
    assert table.ref.startswith("A1:") and table.autoFilter is not None
    cost_col = header.index("cost") + 1
    last = sheet.max_row
    cell = sheet.cell(row=2, column=cost_col)
    assert "$" in cell.number_format and isinstance(cell.value, float)
    assert sheet.cell(row=last, column=header.index("row_type") + 1).value == "total"
    json_total = Decimal(get(client, "/v1/reports/daily", start="2026-11-01", end="2026-11-26").json()["totals"]["cost"])
    assert sheet.cell(row=last, column=cost_col).value == pytest.approx(float(json_total), rel=1e-12)
    assert sheet.cell(row=2, column=header.index("cache_hit_rate") + 1).number_format == "0.00%"


# --- statement -----------------------------------------------------------------------------------------

def test_statement_lines_add_up_to_the_stated_total(client, store, two_keys):
    records = generate_records(4000, seed=13, keys=2)  # key-0 and key-1
    ingest(client, [{**r, "api_key_id": "key-a" if r["api_key_id"] == "key-0" else "key-b"} for r in records])
    body = get(client, "/v1/reports/statement", account="acct-1", month="2026-11").json()
    lines = body["lines"]
    assert {line["api_key_id"] for line in lines} == {"key-a"}
    assert "rounded half-up" in body["rounding"]
    exact = sum(Decimal(x["amount"]) for x in lines)
    assert exact == Decimal(body["totals"]["amount"]) == ledger_cost(store, "2026-11-01", "2026-12-01", "acct-1")[0]
    assert sum(Decimal(x["amount_rounded"]) for x in lines) == Decimal(body["totals"]["amount_rounded"])
    assert Decimal(body["totals"]["amount_rounded"]) == exact.quantize(Decimal("0.01"), rounding="ROUND_HALF_UP")
    for x in lines:
        assert Decimal(x["amount"]) == Decimal(x["quantity"]) * Decimal(x["price"]) / 1_000_000
        assert abs(Decimal(x["amount_rounded"]) - Decimal(x["amount"])) < Decimal("0.01")
    classes = {x["token_class"] for x in lines}
    assert {"uncached_input", "cached_input", "output", "thinking"} <= classes
    sheet = openpyxl.load_workbook(io.BytesIO(get(client, "/v1/reports/statement", account="acct-1",
                                                  month="2026-11", format="xlsx").content)).active
    header = {row[0].value: row[1].value for row in sheet.iter_rows(min_row=2, max_row=14, max_col=2)}
    assert "rounded half-up" in header["rounding"] and header["account_id"] == "acct-1"
    assert "TOTAL" in [c.value for c in sheet[sheet.max_row]]


def test_round_lines_largest_remainder():
    from metering.services.reports import round_lines

    lines, total = round_lines([Decimal("0.333"), Decimal("0.333"), Decimal("0.334")])
    assert total == Decimal("1.00") and sum(lines) == total and lines == [Decimal("0.33")] * 2 + [Decimal("0.34")]
    lines, total = round_lines([Decimal("0.005")] * 3)
    assert total == Decimal("0.02") and sum(lines) == total


# --- FOCUS 1.2 ---------------------------------------------------------------------------------------------

FOCUS_MANDATORY = [
    "BilledCost", "BillingAccountId", "BillingAccountName", "BillingCurrency", "BillingPeriodEnd",
    "BillingPeriodStart", "ChargeCategory", "ChargeClass", "ChargeDescription", "ChargeFrequency", "ChargePeriodEnd",
    "ChargePeriodStart", "ConsumedQuantity", "ConsumedUnit", "ContractedCost", "ContractedUnitPrice",
    "EffectiveCost", "InvoiceIssuerName", "ListCost", "ListUnitPrice", "PricingCategory", "PricingCurrency",
    "PricingQuantity", "PricingUnit", "ProviderName", "PublisherName", "RegionId", "RegionName", "ResourceId",
    "ResourceName", "ResourceType", "ServiceCategory", "ServiceName", "ServiceSubcategory", "SkuId", "SkuPriceId",
    "SubAccountId", "SubAccountName", "Tags", "AvailabilityZone", "CommitmentDiscountCategory",
    "CommitmentDiscountId", "CommitmentDiscountName", "CommitmentDiscountStatus", "CommitmentDiscountType",
]
FOCUS_DECIMALS = ["BilledCost", "ConsumedQuantity", "ContractedCost", "ContractedUnitPrice", "EffectiveCost",
                  "ListCost", "ListUnitPrice", "PricingQuantity"]
NOT_NULL = ["BilledCost", "BillingAccountId", "BillingCurrency", "BillingPeriodEnd", "BillingPeriodStart",
            "ChargeCategory", "ChargePeriodEnd", "ChargePeriodStart", "ContractedCost", "EffectiveCost", "ListCost",
            "PricingQuantity", "PricingUnit", "ProviderName", "ServiceCategory", "ServiceName", "InvoiceIssuerName"]


def check_focus(frame: pl.DataFrame) -> None:
    """The FOCUS 1.2 conformance rules this export promises."""
    for column in FOCUS_MANDATORY:
        assert column in frame.columns, column
    for column in frame.columns:
        assert column in FOCUS_MANDATORY or column.startswith("x_") or column in (
            "BillingAccountType", "CapacityReservationId", "CapacityReservationStatus", "CommitmentDiscountUnit",
            "InvoiceId", "SkuMeter", "SkuPriceDetails"), column
    for column in NOT_NULL:
        assert frame[column].null_count() == 0, column
    assert set(frame["ChargeCategory"]) == {"Usage"}
    assert set(frame["ServiceCategory"]) == {"AI and Machine Learning"}
    assert set(frame["ServiceSubcategory"]) == {"Generative AI"}
    assert set(frame["PricingUnit"]) <= {"1000000 Tokens", "1000 Requests"}
    assert set(frame["ConsumedUnit"]) <= {"Tokens", "Requests"}
    assert (frame["ChargePeriodEnd"] - frame["ChargePeriodStart"] == timedelta(days=1)).all()
    assert ((frame["BillingPeriodStart"] <= frame["ChargePeriodStart"])
            & (frame["ChargePeriodEnd"] <= frame["BillingPeriodEnd"])).all()
    rows = frame.select("ListUnitPrice", "ListCost", "ContractedUnitPrice", "ContractedCost", "BilledCost",
                        "EffectiveCost", "PricingQuantity", "ConsumedQuantity", "PricingUnit").to_dicts()
    for row in rows:
        assert row["ListCost"] == row["ListUnitPrice"] * row["PricingQuantity"]
        assert row["ContractedCost"] == row["ContractedUnitPrice"] * row["PricingQuantity"]
        assert row["BilledCost"] == row["EffectiveCost"] == row["ContractedCost"]
        per = 1_000 if row["PricingUnit"] == "1000 Requests" else 1_000_000
        assert row["PricingQuantity"] * per == row["ConsumedQuantity"]


def test_focus_export_conforms_and_its_billed_cost_equals_the_ledger(client, store, two_keys):
    ingest(client, generate_records(3000, seed=31))
    r = get(client, "/v1/reports/focus", start="2026-11-01", end="2026-11-26", format="parquet")
    table = pq.read_table(io.BytesIO(r.content))
    for column in FOCUS_DECIMALS:
        assert str(table.schema.field(column).type) == "decimal128(38, 12)", column
    for column in ("ChargePeriodStart", "ChargePeriodEnd", "BillingPeriodStart", "BillingPeriodEnd"):
        assert str(table.schema.field(column).type) == "timestamp[us, tz=UTC]", column
    frame = pl.from_arrow(table)
    check_focus(frame)
    cost, list_cost = ledger_cost(store, "2026-11-01", "2026-11-26")
    assert frame["BilledCost"].sum() == cost and frame["ListCost"].sum() == list_cost
    text = get(client, "/v1/reports/focus", start="2026-11-01", end="2026-11-26").text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == frame.height
    assert sum(Decimal(x["BilledCost"]) for x in rows) == cost
    assert rows[0]["ChargePeriodStart"].endswith("Z")


# --- re-rating ------------------------------------------------------------------------------------------

CHEAPER = {"model": MODEL, "effective_from": "2026-11-10T00:00:00Z",
           "input": {"current": "0.10", "list": "0.30"}, "cached_input": {"current": "0.02", "list": "0.06"},
           "output": {"current": "0.50", "list": "1.20"}}


def test_backdated_price_change_dry_run_then_apply_with_audit_and_reports_follow(client, store):
    ingest(client, [record("before", occurred_at="2026-11-09T12:00:00Z", input_tokens=1_000_000, cached_tokens=0,
                           output_tokens=1_000_000, thinking_tokens=None),
                    record("after", occurred_at="2026-11-11T12:00:00Z", input_tokens=1_000_000, cached_tokens=0,
                           output_tokens=1_000_000, thinking_tokens=None),
                    record("mystery", occurred_at="2026-11-11T12:00:00Z", model="mystery-1")])
    daily = {"start": "2026-11-01", "end": "2026-11-26"}
    assert get(client, "/v1/reports/daily", **daily).json()["totals"]["cost"] == "1.5"  # 2 x (0.15 + 0.60)
    assert client.post("/v1/rates", json=CHEAPER, headers=auth(ADMIN)).status_code == 201
    assert client.post("/v1/rates", json={**CHEAPER, "model": "mystery-1", "effective_from": "2026-01-01T00:00:00Z"},
                       headers=auth(ADMIN)).status_code == 201

    dry = client.post("/v1/reprice", json={"start": "2026-11-01", "end": "2026-12-01", "dry_run": True},
                      headers=auth(ADMIN)).json()
    assert dry["dry_run"] is True
    assert dry["totals"]["changed"] == 2 and dry["totals"]["cost_delta"] == "-0.149766"
    # "after": 0.75 -> 0.60; "mystery" priced: 800 x 0.10 + 200 x 0.02 + 300 x 0.50 per 1M = 0.000234
    by = {(c["api_key_id"], c["model"]): c for c in dry["changes"]}
    assert by[("key-a", MODEL)]["cost_delta"] == "-0.15"
    assert by[("key-a", "mystery-1")]["unpriced_before"] == 1 and by[("key-a", "mystery-1")]["unpriced_after"] == 0
    assert get(client, "/v1/reports/daily", **daily).json()["totals"]["cost"] == "1.5"  # nothing written
    assert client.get("/v1/reprice", headers=auth(ADMIN)).json()["data"] == []

    applied = client.post("/v1/reprice", json={"start": "2026-11-01", "end": "2026-12-01"}, headers=auth(ADMIN)).json()
    assert applied["totals"] == dry["totals"]
    (audit,) = client.get("/v1/reprice", headers=auth(ADMIN)).json()["data"]
    assert audit["records_changed"] == 2 and audit["cost_before"] == "1.5" and audit["cost_after"] == "1.350234"
    assert audit["start"] == "2026-11-01T00:00:00Z" and audit["versions"] == [1, 2, 3]
    # Every view follows at once: the daily report, the usage API, the statement, FOCUS, unpriced.
    assert get(client, "/v1/reports/daily", **daily).json()["totals"]["cost"] == "1.350234"
    assert get(client, "/v1/usage", **daily).json()["totals"]["cost"] == "1.350234"
    statement = get(client, "/v1/reports/statement", account="unassigned", month="2026-11").json()
    assert statement["totals"]["amount"] == "1.350234" and statement["unpriced_requests"] == 0
    focus = pl.read_csv(io.StringIO(get(client, "/v1/reports/focus", start="2026-11-01", end="2026-12-01").text),
                        schema_overrides={"BilledCost": pl.Decimal(38, 12)})
    assert focus["BilledCost"].sum() == Decimal("1.350234")
    assert get(client, "/v1/unpriced").json()["data"] == []
    again = client.post("/v1/reprice", json={"start": "2026-11-01", "end": "2026-12-01", "dry_run": True},
                        headers=auth(ADMIN)).json()
    assert again["totals"]["changed"] == 0


def test_sql_repricing_equals_the_python_pricing_on_random_records(client, store):
    import random

    from metering.pricing import price_record
    from metering.records import parse_record

    rng = random.Random(17)
    versions = [{"model": MODEL, "effective_from": f"2026-11-{d:02d}T00:00:00Z",
                 "input": {"current": str(rng.randint(1, 999) / 1000), "list": "0.9"},
                 "cached_input": {"current": "0.011", "list": "0.02"},
                 "output": {"current": str(rng.randint(1, 5000) / 1000), "list": "7"},
                 "cache_write": {"current": "0.375", "list": "0.5"}, "thinking": {"current": "2.5", "list": "3"},
                 "web_search": {"current": "10.5", "list": "12"}} for d in (5, 12, 19)]
    for v in versions:
        assert client.post("/v1/rates", json=v, headers=auth(ADMIN)).status_code == 201
    records = generate_records(3000, seed=77)
    ingest(client, records)
    # Forget every price so that the re-rating has to compute each one.
    store.writer.call(lambda con: con.execute("UPDATE ledger SET cost_pico = NULL, list_cost_pico = NULL, "
                                              "rate_version_id = NULL"))
    client.post("/v1/reprice", json={"start": "2026-01-01", "end": "2027-01-01"}, headers=auth(ADMIN))
    with store.reading() as cur:
        stored = {r[0]: (r[1], r[2]) for r in cur.execute("SELECT request_id, cost_pico, list_cost_pico FROM ledger")
                  .fetchall()}
    for raw in records:
        rec = parse_record(raw, now=NOW)
        version = store.card.version_at(rec.model, rec.occurred_at)
        expected = (None, None) if version is None else (
            price_record(rec, version).cost.total, price_record(rec, version).list_cost.total)
        assert stored[rec.request_id] == expected
