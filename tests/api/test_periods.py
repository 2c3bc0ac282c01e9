"""Period close (issue 15): a closed month's statements and FOCUS rows are the same bytes forever; late
usage is billed on the first open month as corrections; closed months plus corrections add up to the
ledger to the pico-dollar; re-rating a closed month is a 409; the close survives a restart."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal

import polars as pl
import pyarrow.parquet as pq
from fastapi.testclient import TestClient

from metering.api.app import create_app
from metering.ratecard import load_rate_card
from metering.settings import DEFAULT_RATE_CARD
from metering.store.db import Store
from tests.conftest import ADMIN, MODEL, auth, generate_records, get, ingest, ledger_cost, record

OCTOBER = {"start": "2026-10-01", "end": "2026-11-01"}
NOVEMBER = {"start": "2026-11-01", "end": "2026-12-01"}


def close(client, month, status=200):
    r = client.post("/v1/periods/close", json={"month": month}, headers=auth(ADMIN))
    assert r.status_code == status, r.text
    return r.json()


def october(n, seed, *, prefix="oct"):
    """Records spread over October 2026 on keys key-a (acct-1), key-b (acct-2) and unregistered ones."""
    records = generate_records(n, seed=seed, start=datetime(2026, 10, 1, tzinfo=UTC),
                               span=datetime(2026, 11, 1, tzinfo=UTC) - datetime(2026, 10, 1, tzinfo=UTC), keys=4,
                               prefix=prefix)
    rename = {"key-0": "key-a", "key-1": "key-b"}
    return [{**r, "api_key_id": rename.get(r["api_key_id"], r["api_key_id"])} for r in records]


DOCUMENTS = [
    ("/v1/reports/statement", {"account": "acct-1", "month": "2026-10", "format": "json"}),
    ("/v1/reports/statement", {"account": "acct-1", "month": "2026-10", "format": "csv"}),
    ("/v1/reports/statement", {"account": "acct-2", "month": "2026-10", "format": "csv"}),
    ("/v1/reports/statement", {"account": "unassigned", "month": "2026-10", "format": "json"}),
    ("/v1/reports/statement", {"account": "acct-1", "month": "2026-10", "format": "xlsx"}),
    ("/v1/reports/focus", {**OCTOBER, "format": "csv"}),
    ("/v1/reports/focus", {**OCTOBER, "format": "parquet"}),
]


def documents(client):
    return [get(client, path, **params).content for path, params in DOCUMENTS]


def test_close_then_late_records_rerating_and_restart_keep_the_closed_month_byte_for_byte(
        client, store, two_keys, clock, settings):
    ingest(client, october(3000, seed=1))
    ingest(client, [record("nov-1", occurred_at="2026-11-03T10:00:00Z", tags={"project": "alpha"})])
    before = get(client, "/v1/reports/statement", account="acct-1", month="2026-10").json()
    assert before["status"] == "open" and before["closed_at"] is None
    focus_before = get(client, "/v1/reports/focus", **OCTOBER).content

    result = close(client, "2026-10")
    assert result["closed_now"] is True
    period = result["period"]
    cost, list_cost = ledger_cost(store, "2026-10-01", "2026-11-01")
    assert Decimal(period["amount"]) == cost and Decimal(period["list_amount"]) == list_cost
    assert Decimal(period["correction_amount"]) == 0 and period["closed_by"] == "api"
    closed = documents(client)
    after = get(client, "/v1/reports/statement", account="acct-1", month="2026-10").json()
    assert after["status"] == "closed" and after["closed_at"] == "2026-11-25T12:00:00Z"
    assert after["lines"] == before["lines"] and after["totals"] == before["totals"]  # closing billed what was shown
    focus_after = pl.read_csv(io.BytesIO(get(client, "/v1/reports/focus", **OCTOBER).content), infer_schema=False)
    assert focus_after.drop("InvoiceId").equals(pl.read_csv(io.BytesIO(focus_before), infer_schema=False).drop("InvoiceId"))
    assert focus_after["InvoiceId"].to_list() == [f"{a}/2026-10" for a in focus_after["BillingAccountId"]]  # issued
    assert close(client, "2026-10")["closed_now"] is False  # idempotent: nothing changes
    assert documents(client) == closed

    # Late usage for October: stored as usual, billed in November as corrections; October never moves.
    late = october(400, seed=2, prefix="late")
    ingest(client, late)
    assert documents(client) == closed
    usage = get(client, "/v1/usage", bucket="month", **OCTOBER).json()  # the usage API: when it happened
    assert usage["totals"]["requests"] == 3400

    # Re-rating a range that touches the closed month: 409 naming it, dry run or not; open months are fine.
    for body in ({"start": "2026-10-15", "end": "2026-11-10"}, {"start": "2026-09-01", "end": "2026-10-02",
                                                               "dry_run": True}):
        r = client.post("/v1/reprice", json=body, headers=auth(ADMIN))
        assert r.status_code == 409 and r.json()["error"]["code"] == "period_closed", r.text
        assert "2026-10" in r.json()["error"]["message"] or "2026-09" in r.json()["error"]["message"]
    assert client.post("/v1/reprice", json={"start": "2026-11-01", "end": "2026-12-01"},
                       headers=auth(ADMIN)).status_code == 200
    assert documents(client) == closed

    # Closed month + corrections = everything that happened, per account and in FOCUS, to the pico-dollar.
    assert_reconciles(client, store, usage_months=["2026-10"], billing_months=["2026-10", "2026-11"])
    nov = get(client, "/v1/reports/statement", account="acct-1", month="2026-11").json()
    corrections = [x for x in nov["lines"] if x["line_type"] == "correction"]
    assert corrections and {x["usage_month"] for x in corrections} == {"2026-10"}
    assert Decimal(nov["totals"]["correction_amount"]) == sum(Decimal(x["amount"]) for x in corrections)
    assert {x["usage_month"] for x in nov["lines"] if x["line_type"] == "usage"} == {"2026-11"}

    # A restart on the same file: the closed documents are the same bytes.
    client.__exit__(None, None, None)
    store.close()
    reopened = Store(store.path, clock=clock)
    reopened.seed_rate_card(load_rate_card(DEFAULT_RATE_CARD), source="test")
    try:
        with TestClient(create_app(settings, store=reopened)) as again:
            assert documents(again) == closed
            assert_reconciles(again, reopened, usage_months=["2026-10"], billing_months=["2026-10", "2026-11"])
    finally:
        reopened.close()


def assert_reconciles(client, store, *, usage_months, billing_months):
    """For each usage month: what closed and open statements bill for it (usage + corrections, every
    account) and what FOCUS bills for it equal the ledger's cost and list cost of that month."""
    accounts = ["acct-1", "acct-2", "unassigned"]
    billed: dict[str, list[Decimal]] = {m: [Decimal(0), Decimal(0)] for m in usage_months}
    for month in billing_months:
        for account in accounts:
            doc = get(client, "/v1/reports/statement", account=account, month=month).json()
            assert sum(Decimal(x["amount_rounded"]) for x in doc["lines"]) == Decimal(doc["totals"]["amount_rounded"])
            for line in doc["lines"]:
                if line["usage_month"] in billed:
                    billed[line["usage_month"]][0] += Decimal(line["amount"])
                    billed[line["usage_month"]][1] += Decimal(line["list_amount"])
    first, last = billing_months[0], billing_months[-1]
    focus = pl.read_parquet(io.BytesIO(get(client, "/v1/reports/focus", start=f"{first}-01",
                                           end=_next(last), format="parquet").content))
    for month in usage_months:
        cost, list_cost = ledger_cost(store, f"{month}-01", _next(month))
        assert billed[month] == [cost, list_cost], month
        rows = focus.filter(pl.col("ChargePeriodStart").dt.strftime("%Y-%m") == month)
        assert (rows["BilledCost"].sum(), rows["ListCost"].sum()) == (cost, list_cost), month


def _next(month: str) -> str:
    y, m = int(month[:4]), int(month[5:7])
    return f"{y + m // 12}-{m % 12 + 1:02d}-01"


def test_corrections_chain_over_several_closes_and_focus_marks_them(client, store, two_keys, clock):
    ingest(client, october(1500, seed=3))
    close(client, "2026-10")
    ingest(client, october(200, seed=4, prefix="late1"))
    ingest(client, [record("nov-a", occurred_at="2026-11-20T10:00:00Z"),
                    record("nov-b", occurred_at="2026-11-21T10:00:00Z", api_key_id="key-b")])
    # Not yet: November has not ended; December cannot come before November.
    assert close(client, "2026-11", 409)["error"]["code"] == "period_order"
    clock.now = datetime(2027, 1, 5, tzinfo=UTC)
    assert "close 2026-11 first" in close(client, "2026-12", 409)["error"]["message"]
    november = close(client, "2026-11")["period"]
    assert Decimal(november["correction_amount"]) > 0
    assert close(client, "2026-09", 409)["error"]["code"] == "period_order"  # before the first closed month
    ingest(client, october(100, seed=5, prefix="late2"))
    ingest(client, [record("sep-late", occurred_at="2026-09-30T23:00:00Z", tags={"project": "zeta"})])

    # FOCUS of December: correction rows of October and September, billed in December.
    text = get(client, "/v1/reports/focus", start="2026-12-01", end="2027-01-01").text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows and {r["ChargeClass"] for r in rows} == {"Correction"}
    assert {r["ChargePeriodStart"] for r in rows} == {"2026-10-01T00:00:00Z", "2026-09-01T00:00:00Z"}
    assert {(r["BillingPeriodStart"], r["BillingPeriodEnd"]) for r in rows} == {("2026-12-01T00:00:00Z",
                                                                                  "2027-01-01T00:00:00Z")}
    assert any('"project":"zeta"' in r["Tags"] for r in rows)
    assert_reconciles(client, store, usage_months=["2026-09", "2026-10", "2026-11"],
                      billing_months=["2026-10", "2026-11", "2026-12"])
    listing = get(client, "/v1/periods").json()
    assert [p["month"] for p in listing["data"]] == ["2026-10", "2026-11"]
    assert listing["first_open_month"] == "2026-12" and listing["billing_tz"] == "UTC"


def test_the_first_close_must_be_the_first_month_with_usage(client, two_keys):
    ingest(client, [record("sep", occurred_at="2026-09-10T00:00:00Z"), record("oct", occurred_at="2026-10-10T00:00:00Z")])
    error = close(client, "2026-10", 409)["error"]
    assert error["code"] == "period_order" and "2026-09" in error["message"]
    assert close(client, "2026-09")["closed_now"] is True
    assert close(client, "2026-11", 409)["error"]["code"] == "period_order"  # the current month has not ended
    for bad in ("2026-13", "26-10", "", "2026-10-01"):
        r = client.post("/v1/periods/close", json={"month": bad}, headers=auth(ADMIN))
        assert r.status_code in (400, 422) and "month" in r.json()["error"]["message"], (bad, r.text)


def test_scheduled_close_catches_up_in_order_and_only_when_due(store, clock, settings):
    from dataclasses import replace

    from metering.services import periods
    from metering.services.context import Context

    ctx = Context(store, replace(settings, auto_close_days=3))
    with TestClient(create_app(ctx.settings, store=store)) as c:
        ingest(c, [record("aug", occurred_at="2026-08-10T00:00:00Z"), record("oct", occurred_at="2026-10-30T00:00:00Z"),
                   record("nov", occurred_at="2026-11-02T00:00:00Z")])
    clock.now = datetime(2026, 11, 3, 23, 0, tzinfo=UTC)  # October ended 2 days 23 hours ago: not due
    assert periods.close_due(ctx) == ["2026-08", "2026-09"]
    clock.now = datetime(2026, 11, 4, 0, 0, tzinfo=UTC)
    assert periods.close_due(ctx) == ["2026-10"]
    assert periods.close_due(ctx) == []
    listing = periods.list_periods(ctx)
    assert [p["closed_by"] for p in listing["data"]] == ["schedule"] * 3
    assert listing["next_to_close"]["month"] == "2026-11" and listing["next_to_close"]["closable"] is False


def test_statement_header_metadata_in_csv_comments_json_fields_and_xlsx_rows(client, two_keys, tmp_path):
    import openpyxl

    ingest(client, [record("a", occurred_at="2026-10-05T10:00:00Z"), record("b", occurred_at="2026-10-06T10:00:00Z",
                                                                          model="unpriced-model")])
    close(client, "2026-10")
    params = {"account": "acct-1", "month": "2026-10"}
    text = get(client, "/v1/reports/statement", format="csv", **params).text
    comments = [line for line in text.splitlines() if line.startswith("# ")]
    header = dict(line[2:].split(": ", 1) for line in comments)
    assert header["account_id"] == "acct-1" and header["month"] == "2026-10" and header["tz"] == "UTC"
    assert header["currency"] == "USD" and "rounded half-up" in header["rounding"] and header["status"] == "closed"
    assert header["period_start"] == "2026-10-01T00:00:00Z" and header["period_end"] == "2026-11-01T00:00:00Z"
    assert header["unpriced_requests"] == "1" and header["requests"] == "2"
    frame = pl.read_csv(io.StringIO(text), comment_prefix="#")  # a CSV reader skips the header lines
    assert "line_type" in frame.columns and frame["description"].to_list()[-1] == "TOTAL"
    body = get(client, "/v1/reports/statement", **params).json()
    for key in ("account_id", "month", "tz", "currency", "rounding", "period_start", "period_end", "status"):
        assert str(body[key]) == header[key]
    path = tmp_path / "statement.xlsx"
    path.write_bytes(get(client, "/v1/reports/statement", format="xlsx", **params).content)
    sheet = openpyxl.load_workbook(path).active
    rows = {r[0].value: r[1].value for r in sheet.iter_rows(min_row=2, max_row=len(header) + 1, max_col=2)}
    assert rows["account_id"] == "acct-1" and rows["currency"] == "USD" and "rounded half-up" in rows["rounding"]
    (table,) = sheet.tables.values()
    assert_totals_outside(sheet, table, "TOTAL")


def assert_totals_outside(sheet, table, label):
    """The table ends before the totals row; the totals row is right below it, and only there."""
    from openpyxl.utils.cell import range_boundaries

    _, min_row, _, max_row = range_boundaries(table.ref)
    inside = [c.value for row in sheet.iter_rows(min_row=min_row + 1, max_row=max_row) for c in row]
    assert label not in inside
    assert label in [c.value for c in sheet[max_row + 1]]
    assert sheet.max_row == max_row + 1


def test_daily_report_xlsx_totals_row_is_outside_the_table(client, tmp_path):
    import openpyxl

    ingest(client, generate_records(200, seed=6))
    path = tmp_path / "daily.xlsx"
    path.write_bytes(get(client, "/v1/reports/daily", start="2026-11-01", end="2026-11-26", format="xlsx").content)
    sheet = openpyxl.load_workbook(path).active
    (table,) = sheet.tables.values()
    assert_totals_outside(sheet, table, "total")


def test_unpriced_usage_is_null_or_empty_never_zero_issue_14(client, tmp_path):
    import openpyxl

    ingest(client, [record("p", occurred_at="2026-11-20T10:00:00Z"),
                    record("u1", occurred_at="2026-11-21T10:00:00Z", model="mystery"),
                    record("u2", occurred_at="2026-11-20T11:00:00Z", model="mystery")])
    usage = get(client, "/v1/usage", start="2026-11-20", end="2026-11-22", group_by="model").json()
    by = {(b["start"][:10], r["model"]): r for b in usage["buckets"] for r in b["results"]}
    assert by[("2026-11-21", "mystery")]["cost"] is None and by[("2026-11-21", "mystery")]["list_cost"] is None
    assert by[("2026-11-20", MODEL)]["cost"] not in (None, "0")
    assert usage["totals"]["cost"] == by[("2026-11-20", MODEL)]["cost"]  # the priced part, exactly
    assert usage["totals"]["unpriced_requests"] == 2
    alone = get(client, "/v1/usage", start="2026-11-21", end="2026-11-22").json()  # only unpriced usage
    assert alone["totals"]["cost"] is None and alone["buckets"][0]["results"][0]["cost"] is None
    partly = get(client, "/v1/usage", start="2026-11-20", end="2026-11-21").json()["totals"]
    assert partly["cost"] not in (None, "0") and partly["unpriced_requests"] == 1  # partly priced: the priced cost

    params = {"start": "2026-11-20", "end": "2026-11-22", "group_by": "model"}
    daily = get(client, "/v1/reports/daily", **params).json()
    mystery = [r for r in daily["rows"] if r["model"] == "mystery"]
    assert all(r["cost"] is None and r["savings"] is None for r in mystery)
    rows = list(csv.DictReader(io.StringIO(get(client, "/v1/reports/daily", format="csv", **params).text)))
    assert {r["cost"] for r in rows if r["model"] == "mystery"} == {""}
    assert all(r["cost"] != "" for r in rows if r["model"] == MODEL)
    table = pq.read_table(io.BytesIO(get(client, "/v1/reports/daily", format="parquet", **params).content))
    assert pl.from_arrow(table).filter(pl.col("model") == "mystery")["cost"].null_count() == 2
    path = tmp_path / "d.xlsx"
    path.write_bytes(get(client, "/v1/reports/daily", format="xlsx", **params).content)
    sheet = openpyxl.load_workbook(path).active
    head = [c.value for c in sheet[1]]
    cells = [(row[head.index("model")].value, row[head.index("cost")].value) for row in sheet.iter_rows(min_row=2)]
    assert {cost for model, cost in cells if model == "mystery"} == {None}
    overview = get(client, "/v1/overview", start="2026-11-21", end="2026-11-22").json()
    assert overview["totals"]["cost"] is None and overview["top_models"][0]["cost"] is None
