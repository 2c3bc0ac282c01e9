"""POST /v1/reconcile: hand-made provider usage reports (tests/data/reconcile, README there) against a
ledger filled through the API with the same usage; exactly the planted drifts are flagged."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from pathlib import Path

import openpyxl
import pytest

from metering.ratecard import load_rate_card
from tests.conftest import ADMIN, INGEST, auth

DATA = Path(__file__).parents[1] / "data" / "reconcile"
OPENAI_MODELS = "gpt-*,o3-*"
ANTHROPIC_MODELS = "claude-*"


def load(name: str):
    return json.loads((DATA / name).read_text())


def ledger_records() -> list[dict]:
    return [json.loads(line) for line in (DATA / "ledger.ndjson").read_text().splitlines()]


@pytest.fixture
def ledger(client):
    for version in load_rate_card(DATA / "rate_card.toml").all_versions():
        if version.model == "minimax-m2-7":  # the default card has it already
            continue
        body = {k: v for k, v in version.as_json().items() if k not in ("id", "unit") and v is not None}
        r = client.post("/v1/rates", json=body, headers=auth(ADMIN))
        assert r.status_code == 201, r.text
    r = client.post("/v1/usage", json=ledger_records(), headers=auth(INGEST))
    assert r.status_code == 200 and r.json()["accepted"] == 60, r.text
    return client


def post(client, provider, report, *, start="2026-11-01", end="2026-11-06", raw: bytes | None = None, **params):
    return client.post("/v1/reconcile", params={"provider": provider, "start": start, "end": end, **params},
                       content=raw if raw is not None else json.dumps(report),
                       headers={**auth(ADMIN), "Content-Type": "application/json"})


def reconcile(client, provider, report, **params) -> dict:
    r = post(client, provider, report, **params)
    assert r.status_code == 200, r.text
    return r.json()


def drifts(result: dict) -> dict[tuple, list[str]]:
    return {(r["date"], r["model"], *([r["group"]] if "group" in r else [])): r["reasons"]
            for r in result["rows"] if r["status"] == "drift"}


def usage_costs(client) -> dict[tuple[str, str], str]:
    r = client.get("/v1/usage", params={"start": "2026-11-01", "end": "2026-11-06", "group_by": "model"},
                   headers=auth(ADMIN))
    assert r.status_code == 200, r.text
    return {(b["start"][:10], row["model"]): row["cost"] for b in r.json()["buckets"] for row in b["results"]}


def ledger_count(model: str, day: str, name: str) -> int:
    return sum(r[name] for r in ledger_records() if r["model"] == model and r["occurred_at"].startswith(day))


def test_openai_report_flags_exactly_the_planted_rows(ledger):
    result = reconcile(ledger, "openai", load("openai_completions_by_model.json"), models=OPENAI_MODELS)
    mini_out = ledger_count("gpt-4.1-mini", "2026-11-02", "output_tokens")
    cached = ledger_count("gpt-4.1", "2026-11-05", "cached_tokens")
    assert drifts(result) == {
        ("2026-11-02", "gpt-4.1-mini"): [f"output_tokens: openai {mini_out + 3}, ledger {mini_out} (+3)"],
        ("2026-11-03", "gpt-4o-mini"): ["not in the ledger"],
        ("2026-11-04", "gpt-4.1"): ["not in the ledger"],
        ("2026-11-05", "gpt-4.1"): [f"cached_tokens: openai {cached - 400}, ledger {cached} (-400)"],
    }
    rows = {(r["date"], r["model"]): r for r in result["rows"]}
    assert len(rows) == 12 and sum(r["status"] == "match" for r in rows.values()) == 8
    summary = result["summary"]
    assert (summary["rows"], summary["match"], summary["drift"], summary["status"]) == (12, 8, 4, "drift")
    assert summary["not_reported"] == ["web_search_requests"]
    assert summary["unpriced_models"] == ["o3-mini"]
    assert summary["days_not_covered"] == [] and summary["complete"] is True and summary["pages"] == 2

    # costs at our rate card: a matching row costs on both sides what the ledger billed
    billed = usage_costs(ledger)
    for key, row in rows.items():
        if row["status"] == "match" and row["model"] != "o3-mini":
            assert row["provider_cost"] == row["ledger_cost"] == billed[key], key
            assert row["cost_difference"] == "0"
    # the drifts are worth the price of their tokens, exactly
    assert rows[("2026-11-02", "gpt-4.1-mini")]["cost_difference"] == "0.0000048"  # 3 x 1.60 / 1M
    assert rows[("2026-11-05", "gpt-4.1")]["cost_difference"] == "0.0006"  # 400 x (2.00 - 0.50) / 1M
    assert rows[("2026-11-04", "gpt-4.1")]["provider_cost"] == "0.078316"  # (16718 x 2 + 6400 x 0.5 + 5210 x 8) / 1M
    assert rows[("2026-11-04", "gpt-4.1")]["ledger_cost"] == "0"
    assert rows[("2026-11-04", "gpt-4.1")]["relative_difference"]["output_tokens"] is None  # ledger 0
    assert rows[("2026-11-05", "gpt-4.1")]["relative_difference"]["cached_tokens"] == str(
        (Decimal(-400) / cached).quantize(Decimal("0.000000001")))
    # the price change of 3 November is used from that day
    assert rows[("2026-11-02", "gpt-4.1-mini")]["rate_effective_from"] == "2026-01-01T00:00:00Z"
    assert rows[("2026-11-03", "gpt-4.1-mini")]["rate_effective_from"] == "2026-11-03T00:00:00Z"
    # a model without a price: compared, costs null, and the row says why
    o3 = rows[("2026-11-05", "o3-mini")]
    assert o3["status"] == "match" and o3["provider_cost"] is None and o3["ledger_cost"] is None
    assert o3["notes"] == ["o3-mini has no price on our rate card on 2026-11-05: costs are null"]
    assert o3["ledger"]["thinking_tokens"] == ledger_count("o3-mini", "2026-11-05", "thinking_tokens")
    assert o3["provider"]["web_search_requests"] is None and o3["difference"]["web_search_requests"] is None
    total = sum(Decimal(r["provider_cost"]) - Decimal(r["ledger_cost"]) for r in rows.values() if r["provider_cost"])
    assert Decimal(summary["cost_difference"]) == total == Decimal(summary["provider_cost"]) - Decimal(
        summary["ledger_cost"])


def test_anthropic_report_flags_exactly_the_planted_rows(ledger):
    result = reconcile(ledger, "anthropic", load("anthropic_messages_by_model.json"), models=ANTHROPIC_MODELS)
    out = ledger_count("claude-sonnet-4-5", "2026-11-03", "output_tokens")
    cached = ledger_count("claude-sonnet-4-5", "2026-11-05", "cached_tokens")
    assert drifts(result) == {
        ("2026-11-02", "claude-haiku-4-5"): ["not in the ledger"],
        ("2026-11-03", "claude-sonnet-4-5"): [f"output_tokens: anthropic {out + 3}, ledger {out} (+3)"],
        ("2026-11-04", "claude-opus-4-1"): ["not in the anthropic report"],
        ("2026-11-05", "claude-sonnet-4-5"): [f"cached_tokens: anthropic {cached + 100}, ledger {cached} (+100)"],
    }
    assert result["summary"]["not_reported"] == ["requests"]
    assert (result["summary"]["rows"], result["summary"]["drift"]) == (11, 4)
    billed = usage_costs(ledger)
    for row in result["rows"]:
        assert row["provider"]["requests"] is None
        if row["status"] == "match":  # web searches and cache writes priced on both sides
            assert row["provider_cost"] == row["ledger_cost"] == billed[(row["date"], row["model"])]
            assert row["provider"]["web_search_requests"] == row["ledger"]["web_search_requests"]
    opus = next(r for r in result["rows"] if r["model"] == "claude-opus-4-1")
    assert opus["provider_cost"] == "0" and opus["ledger_cost"] == billed[("2026-11-04", "claude-opus-4-1")]
    # 100 tokens read from cache by the provider that we counted as uncached: 100 x (0.30 - 3) / 1M
    day5 = next(r for r in result["rows"] if (r["date"], r["model"]) == ("2026-11-05", "claude-sonnet-4-5"))
    assert day5["cost_difference"] == "-0.00027" and day5["difference"]["input_tokens"] == 0


def test_without_a_model_filter_the_other_providers_models_are_ledger_only_rows(ledger):
    result = reconcile(ledger, "openai", load("openai_completions_by_model.json"))
    claude = {k: v for k, v in drifts(result).items() if k[1].startswith("claude-")}
    assert len(claude) == 10 and set(map(tuple, claude.values())) == {("not in the openai report",)}


def test_tolerance_lets_small_relative_differences_match_but_never_one_sided_rows(ledger):
    result = reconcile(ledger, "openai", load("openai_completions_by_model.json"), models=OPENAI_MODELS,
                       tolerance="0.01")
    assert set(drifts(result)) == {("2026-11-03", "gpt-4o-mini"), ("2026-11-04", "gpt-4.1"),
                                   ("2026-11-05", "gpt-4.1")}  # 3 of ~6,000 output tokens is within 1%
    row = next(r for r in result["rows"] if (r["date"], r["model"]) == ("2026-11-02", "gpt-4.1-mini"))
    assert row["status"] == "match" and row["difference"]["output_tokens"] == 3  # still shown
    assert result["summary"]["tolerance"] == "0.01"
    result = reconcile(ledger, "anthropic", load("anthropic_messages_by_model.json"), models=ANTHROPIC_MODELS,
                       tolerance="0.01")
    assert set(drifts(result)) == {("2026-11-02", "claude-haiku-4-5"), ("2026-11-04", "claude-opus-4-1"),
                                   ("2026-11-05", "claude-sonnet-4-5")}
    loose = reconcile(ledger, "anthropic", load("anthropic_messages_by_model.json"), models=ANTHROPIC_MODELS,
                      tolerance="1")
    assert set(drifts(loose)) == {("2026-11-02", "claude-haiku-4-5"), ("2026-11-04", "claude-opus-4-1")}


def test_openai_projects_mapped_to_a_tag_locate_the_drift_in_its_project(ledger):
    report = load("openai_completions_by_project.json")
    mapped = reconcile(ledger, "openai", report, end="2026-11-03", models=OPENAI_MODELS, split_by="project_id",
                       match_to="tag:project", map=["proj_Alpha7Hq2=alpha", "proj_Beta9Kx4=beta"])
    assert list(drifts(mapped)) == [("2026-11-02", "gpt-4.1-mini", "beta")]
    assert len(mapped["rows"]) == 8  # 2 days x 2 models x 2 projects
    beta = next(r for r in mapped["rows"] if r["status"] == "drift")
    assert beta["provider_ids"] == ["proj_Beta9Kx4"] and beta["difference"]["output_tokens"] == 3
    assert mapped["summary"]["split"] == {"provider_field": "project_id", "ledger_field": "tag:project",
                                          "mapping": {"proj_Alpha7Hq2": "alpha", "proj_Beta9Kx4": "beta"}}
    # without the map, the provider's ids meet none of our tag values: every row is one-sided
    unmapped = reconcile(ledger, "openai", report, end="2026-11-03", models=OPENAI_MODELS, split_by="project_id",
                         match_to="tag:project")
    assert unmapped["summary"]["match"] == 0 and unmapped["summary"]["drift"] == 16


def test_anthropic_api_keys_mapped_to_our_keys(ledger):
    result = reconcile(ledger, "anthropic", load("anthropic_messages_by_api_key.json"), start="2026-11-03",
                       end="2026-11-05", models=ANTHROPIC_MODELS, split_by="api_key_id",
                       map="apikey_01Rj2N8SVvo6BePZj99NhmiT=key-a,apikey_01HxQ4mWc3Lp7ZkV2bTn8sYe=key-b")
    out = sum(r["output_tokens"] for r in ledger_records() if r["model"] == "claude-sonnet-4-5"
              and r["occurred_at"].startswith("2026-11-03") and r["api_key_id"] == "key-a")
    assert drifts(result) == {
        ("2026-11-03", "claude-sonnet-4-5", "key-a"): [f"output_tokens: anthropic {out + 3}, ledger {out} (+3)"],
        ("2026-11-04", "claude-opus-4-1", "key-a"): ["not in the anthropic report"],
        ("2026-11-04", "claude-opus-4-1", "key-b"): ["not in the anthropic report"],
    }
    assert result["summary"]["match"] == 7  # 2 days x 2 models x 2 keys, less the drift


def test_csv_is_a_document_with_its_metadata_and_exact_money(ledger):
    report = load("openai_completions_by_model.json")
    as_json = reconcile(ledger, "openai", report, models=OPENAI_MODELS)
    r = post(ledger, "openai", report, models=OPENAI_MODELS, format="csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert 'filename="reconcile-openai-2026-11-01-2026-11-06.csv"' in r.headers["content-disposition"]
    lines = r.text.splitlines()
    meta = [line for line in lines if line.startswith("# ")]
    assert meta[0] == "# document: provider usage reconciliation (openai: GET /v1/organization/usage/completions)"
    assert "# period: 2026-11-01 to 2026-11-06 (UTC days, end exclusive)" in meta
    assert "# result: drift: 8 rows match, 4 drift" in meta
    assert f"# cost difference: {as_json['summary']['cost_difference']} (provider - ledger)" in meta
    rows = list(csv.DictReader(io.StringIO("\n".join(line for line in lines if not line.startswith("# ")))))
    assert len(rows) == 12
    for got, want in zip(rows, as_json["rows"], strict=True):
        assert (got["date"], got["model"], got["status"]) == (want["date"], want["model"], want["status"])
        assert got["provider_cost"] == (want["provider_cost"] or "") and got["ledger_cost"] == (want["ledger_cost"] or "")
        assert got["provider_output_tokens"] == str(want["provider"]["output_tokens"])
        assert got["reasons"] == "; ".join(want["reasons"])


def test_xlsx_writes_text_from_the_data_as_text_never_as_a_formula(ledger):
    hostile = '=HYPERLINK("http://example.invalid/x","open")'
    r = ledger.post("/v1/usage", json={"request_id": "hostile-1", "occurred_at": "2026-11-01T10:00:00Z",
                                       "api_key_id": "key-a", "model": hostile, "input_tokens": 10,
                                       "output_tokens": 5}, headers=auth(INGEST))
    assert r.status_code == 200, r.text
    page = {"object": "page", "has_more": False, "next_page": None, "data": [
        {"object": "bucket", "start_time": 1793491200, "end_time": 1793577600, "results": [
            {"object": "organization.usage.completions.result", "model": hostile, "input_tokens": 10,
             "output_tokens": 5, "input_cached_tokens": 0, "num_model_requests": 1}]}]}
    r = post(ledger, "openai", page, end="2026-11-02", format="xlsx", models="=*,gpt-*")
    assert r.status_code == 200, r.text
    sheet = openpyxl.load_workbook(io.BytesIO(r.content)).active
    cells = [c for row in sheet.iter_rows() for c in row if c.value is not None]
    assert not [c for c in cells if c.data_type == "f"]
    header = next(c.row for c in cells if c.value == "date" and c.column == 1)
    names = [c.value for c in sheet[header]]
    data = [{n: c.value for n, c in zip(names, row, strict=True)} for row in sheet.iter_rows(min_row=header + 1)]
    hostile_row = next(d for d in data if d["model"] == hostile)
    assert hostile_row["status"] == "match" and hostile_row["ledger_input_tokens"] == 10
    mini = next(d for d in data if d["model"] == "gpt-4.1-mini")
    assert isinstance(mini["ledger_cost"], float) and mini["provider_cost"] == 0
    assert mini["status"] == "drift" and mini["reasons"] == "not in the openai report"
    assert sheet["A1"].value == "document" and sheet["B2"].value.startswith("2026-11-01 to 2026-11-02")


def bad(client, provider="openai", report=None, **kwargs) -> str:
    r = post(client, provider, report if report is not None else load("openai_completions_by_model.json"), **kwargs)
    assert r.status_code == 400, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    return body["error"]["message"]


def test_bad_requests_are_400s_that_say_what_and_where(ledger):
    pages = load("openai_completions_by_model.json")
    pages[1]["data"][1]["results"][0]["num_model_requests"] = -2
    assert bad(ledger, report=pages).startswith("page 2, bucket 2 (2026-11-05T00:00:00Z), result 1: "
                                                "num_model_requests: must be a non-negative integer, got -2")
    assert bad(ledger, raw=b'{"object": "page", "data": [').startswith("body: not valid JSON")
    assert bad(ledger, raw=b"").startswith("body: empty")
    assert "use provider=anthropic" in bad(ledger, report=load("anthropic_messages_by_model.json"))
    assert "use provider=openai" in bad(ledger, "anthropic")
    minute = {"object": "page", "has_more": False, "data": [
        {"object": "bucket", "start_time": 1793491200, "end_time": 1793491260, "results": []}]}
    assert bad(ledger, report=minute).startswith("page 1, bucket 1: spans 2026-11-01T00:00:00Z to 2026-11-01T00:01:00Z")
    assert bad(ledger, start="1999-12-31").startswith("start: must be between 2000-01-01 and 2100-01-01")
    assert bad(ledger, end="2100-01-02").startswith("end: must be between 2000-01-01 and 2100-01-01")
    assert bad(ledger, start="2026-11-06", end="2026-11-01").startswith("end (2026-11-01) must be after start")
    assert bad(ledger, "azure").startswith("provider: must be one of openai, anthropic")
    assert bad(ledger, tolerance="5%").startswith("tolerance: must be a fraction from 0 to 1")
    assert bad(ledger, format="pdf").startswith("format: must be one of json, csv, xlsx")
    assert bad(ledger, split_by="workspace_id").startswith("split_by: a openai report can be split by")
    r = ledger.post("/v1/reconcile", params={"provider": "openai", "end": "2026-11-06"}, json={},
                    headers=auth(ADMIN))
    assert r.status_code == 400 and "start" in r.json()["error"]["message"]
