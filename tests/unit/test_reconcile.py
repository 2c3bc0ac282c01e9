"""Reading providers' usage reports (pure): normalization to our token classes, day buckets from
daily or hourly buckets, and a clear error naming page, bucket, result and field for bad input."""

from __future__ import annotations

import copy
import json
from collections import defaultdict
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metering import reconcile as rc
from metering.errors import BadRequest
from metering.ratecard import load_rate_card

DATA = Path(__file__).parents[1] / "data" / "reconcile"
CARD = load_rate_card(DATA / "rate_card.toml")


def load(name: str):
    return json.loads((DATA / name).read_text())


def ledger_sums(models: set[str]) -> dict[tuple[date, str], dict[str, int]]:
    """The fixture ledger summed per UTC day x model, independently of the code under test."""
    out: dict[tuple[date, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for line in (DATA / "ledger.ndjson").read_text().splitlines():
        r = json.loads(line)
        if r["model"] not in models:
            continue
        c = out[(date.fromisoformat(r["occurred_at"][:10]), r["model"])]
        c["requests"] += 1
        for name in ("input_tokens", "cached_tokens", "cache_write_tokens", "output_tokens", "web_search_requests"):
            c[name] += r[name]
        c["thinking_tokens"] += r.get("thinking_tokens") or 0
    return out


def cells(report: rc.Report) -> dict[tuple[date, str], dict[str, int]]:
    return {(d, m): counts for (d, m, _), counts in report.cells.items()}


def test_openai_pages_are_read_as_the_ledger_counts_them_except_the_planted_cells():
    report = rc.parse_report(load("openai_completions_by_model.json"), "openai")
    ours = ledger_sums({"gpt-4.1-mini", "gpt-4.1", "o3-mini"})
    planted = {(date(2026, 11, 2), "gpt-4.1-mini"), (date(2026, 11, 3), "gpt-4o-mini"),
               (date(2026, 11, 4), "gpt-4.1"), (date(2026, 11, 5), "gpt-4.1")}
    theirs = cells(report)
    assert set(theirs) == set(ours) | planted
    for cell, counts in ours.items():
        compared = {n: counts[n] for n in ("requests", "input_tokens", "cached_tokens", "cache_write_tokens",
                                           "output_tokens")}
        got = {n: theirs[cell][n] for n in compared}
        if cell in planted:
            assert got != compared
        else:
            assert got == compared, cell
    assert theirs[(date(2026, 11, 2), "gpt-4.1-mini")]["output_tokens"] == ours[(date(2026, 11, 2), "gpt-4.1-mini")][
        "output_tokens"] + 3
    assert report.reported == {"requests", "input_tokens", "cached_tokens", "cache_write_tokens", "output_tokens"}
    assert report.pages == 2 and report.buckets == 5 and report.complete
    assert all(len(report.hours[date(2026, 11, d)]) == 24 for d in range(1, 6))


def test_anthropic_uncached_input_plus_cache_reads_and_writes_is_our_inclusive_input():
    report = rc.parse_report(load("anthropic_messages_by_model.json"), "anthropic")
    ours = ledger_sums({"claude-sonnet-4-5", "claude-haiku-4-5"})
    theirs = cells(report)
    day1 = theirs[(date(2026, 11, 1), "claude-sonnet-4-5")]
    raw = next(r for r in load("anthropic_messages_by_model.json")[0]["data"][0]["results"]
               if r["model"] == "claude-sonnet-4-5")
    assert day1["input_tokens"] == (raw["uncached_input_tokens"] + raw["cache_read_input_tokens"]
                                    + raw["cache_creation"]["ephemeral_5m_input_tokens"]
                                    + raw["cache_creation"]["ephemeral_1h_input_tokens"])
    for cell in [(date(2026, 11, 1), "claude-sonnet-4-5"), (date(2026, 11, 4), "claude-haiku-4-5")]:
        for name in ("input_tokens", "cached_tokens", "cache_write_tokens", "output_tokens", "web_search_requests"):
            assert theirs[cell][name] == ours[cell][name], (cell, name)
    planted = theirs[(date(2026, 11, 5), "claude-sonnet-4-5")]
    mine = ours[(date(2026, 11, 5), "claude-sonnet-4-5")]
    assert planted["input_tokens"] == mine["input_tokens"] and planted["cached_tokens"] == mine["cached_tokens"] + 100
    assert "requests" not in report.reported and "web_search_requests" in report.reported
    assert report.pages == 3


def test_a_single_page_is_a_report_and_an_unfinished_one_says_so():
    page = load("openai_completions_by_model.json")[0]
    report = rc.parse_report(page, "openai")
    assert report.pages == 1 and not report.complete
    result = rc.compare(report, [], CARD, start=date(2026, 11, 1), end=date(2026, 11, 4))
    assert result["summary"]["complete"] is False and "has_more" in result["summary"]["warning"]


def hourly_page(day: date, hours: range, per_hour: dict) -> dict:
    start = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())
    return {"object": "page", "has_more": False, "next_page": None, "data": [
        {"object": "bucket", "start_time": start + h * 3600, "end_time": start + (h + 1) * 3600,
         "results": [{"object": "organization.usage.completions.result", "model": "gpt-4.1", **per_hour}]}
        for h in hours]}


def test_hourly_buckets_are_summed_into_utc_days_and_a_partial_day_drifts():
    counts = {"input_tokens": 100, "input_cached_tokens": 10, "output_tokens": 7, "num_model_requests": 1}
    report = rc.parse_report([hourly_page(date(2026, 11, 1), range(24), counts),
                              hourly_page(date(2026, 11, 2), range(5), counts)], "openai")
    assert cells(report)[(date(2026, 11, 1), "gpt-4.1")]["input_tokens"] == 2400
    assert cells(report)[(date(2026, 11, 2), "gpt-4.1")]["output_tokens"] == 35
    ledger = [rc.LedgerCell(date(2026, 11, 1), "gpt-4.1", None, {
        "requests": 24, "input_tokens": 2400, "cached_tokens": 240, "cache_write_tokens": 0, "output_tokens": 168,
        "thinking_tokens": 0, "web_search_requests": 0}),
        rc.LedgerCell(date(2026, 11, 2), "gpt-4.1", None, {
            "requests": 5, "input_tokens": 500, "cached_tokens": 50, "cache_write_tokens": 0, "output_tokens": 35,
            "thinking_tokens": 0, "web_search_requests": 0}),
        rc.LedgerCell(date(2026, 11, 3), "gpt-4.1", None, {
            "requests": 1, "input_tokens": 100, "cached_tokens": 10, "cache_write_tokens": 0, "output_tokens": 7,
            "thinking_tokens": 0, "web_search_requests": 0})]
    result = rc.compare(report, ledger, CARD, start=date(2026, 11, 1), end=date(2026, 11, 4))
    rows = {r["date"]: r for r in result["rows"]}
    assert rows["2026-11-01"]["status"] == "match"
    assert rows["2026-11-02"]["status"] == "drift"
    assert rows["2026-11-02"]["reasons"] == ["the openai report covers only 5 of the 24 hours of this day"]
    assert rows["2026-11-03"]["reasons"] == ["the openai report does not cover this day"]
    assert result["summary"]["days_partially_covered"] == ["2026-11-02"]
    assert result["summary"]["days_not_covered"] == ["2026-11-03"]


def test_the_cost_difference_is_the_price_of_the_token_difference_exactly():
    report = rc.parse_report(load("openai_completions_by_model.json"), "openai")
    ours = ledger_sums({"gpt-4.1-mini"})
    ledger = [rc.LedgerCell(d, m, None, dict(c)) for (d, m), c in ours.items()]
    result = rc.compare(report, ledger, CARD, start=date(2026, 11, 1), end=date(2026, 11, 6),
                        models=rc.parse_models("gpt-4.1-mini"))
    rows = {r["date"]: r for r in result["rows"]}
    assert {d for d, r in rows.items() if r["status"] == "drift"} == {"2026-11-02"}
    assert Decimal(rows["2026-11-02"]["cost_difference"]) == 3 * Decimal("1.60") / 1_000_000
    # from 3 November the second version is in effect
    assert rows["2026-11-02"]["rate_effective_from"] == "2026-01-01T00:00:00Z"
    assert rows["2026-11-03"]["rate_effective_from"] == "2026-11-03T00:00:00Z"
    c = ours[(date(2026, 11, 3), "gpt-4.1-mini")]
    expected = (Decimal(c["input_tokens"] - c["cached_tokens"] - c["cache_write_tokens"]) * Decimal("0.30")
                + c["cache_write_tokens"] * Decimal("0.30") + c["cached_tokens"] * Decimal("0.075")
                + c["output_tokens"] * Decimal("1.20")) / 1_000_000
    assert Decimal(rows["2026-11-03"]["ledger_cost"]) == expected == Decimal(rows["2026-11-03"]["provider_cost"])


def test_tolerance_is_relative_to_the_ledger_count():
    page = hourly_page(date(2026, 11, 1), range(24), {"input_tokens": 1000, "output_tokens": 100,
                                                      "num_model_requests": 1})
    report = rc.parse_report(page, "openai")  # 24,000 input, 2,400 output, 24 requests
    ledger = [rc.LedgerCell(date(2026, 11, 1), "gpt-4.1", None, {
        "requests": 24, "input_tokens": 24_000, "cached_tokens": 0, "cache_write_tokens": 0, "output_tokens": 2_376,
        "thinking_tokens": 0, "web_search_requests": 0})]  # 24 output tokens fewer: 1.0101...% of 2,376

    def status(tolerance: str) -> str:
        return rc.compare(report, ledger, CARD, start=date(2026, 11, 1), end=date(2026, 11, 2),
                          tolerance=rc.parse_tolerance(tolerance))["rows"][0]["status"]

    assert status("0") == "drift"
    assert status("0.01") == "drift"  # 24 > 23.76
    assert status("0.0102") == "match"  # 24 <= 24.2352
    assert status("1") == "match"


# --- bad input ------------------------------------------------------------------------------------------


def error(body, provider="openai", **kwargs) -> str:
    with pytest.raises(BadRequest) as info:
        rc.parse_report(body, provider, **kwargs)
    return info.value.message


def openai_pages():
    return load("openai_completions_by_model.json")


def test_a_negative_count_names_page_bucket_result_and_field():
    pages = openai_pages()
    pages[1]["data"][0]["results"][1]["output_tokens"] = -5
    message = error(pages)
    assert message.startswith("page 2, bucket 1 (2026-11-04T00:00:00Z), result 2: output_tokens:")
    assert "non-negative" in message and "-5" in message


@pytest.mark.parametrize(("value", "words"), [(1.5, "number 1.5"), ("12", "string '12'"), (True, "boolean"),
                                             (10**13 + 1, "must be at most 10,000,000,000,000")])
def test_a_count_that_is_not_an_integer_is_refused(value, words):
    pages = openai_pages()
    pages[0]["data"][2]["results"][0]["input_cached_tokens"] = value
    assert words in error(pages)


def test_an_anthropic_negative_cache_count_names_the_nested_field():
    pages = load("anthropic_messages_by_model.json")
    pages[2]["data"][0]["results"][0]["cache_creation"]["ephemeral_1h_input_tokens"] = -1
    message = error(pages, "anthropic")
    assert message.startswith("page 3, bucket 1 (2026-11-05T00:00:00Z), result 1: cache_creation: "
                              "ephemeral_1h_input_tokens: must be a non-negative integer")


@pytest.mark.parametrize(("span", "words"), [
    ((0, 60), "spans 2026-11-01T00:00:00Z to 2026-11-01T00:01:00Z"),
    ((5 * 3600, 29 * 3600), "spans 2026-11-01T05:00:00Z to 2026-11-02T05:00:00Z"),
    ((0, 7 * 86400), "one whole UTC day"),
    ((1800, 5400), "one whole UTC hour"),
])
def test_a_bucket_that_is_not_a_whole_utc_day_or_hour_is_refused(span, words):
    pages = openai_pages()
    base = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp())
    pages[0]["data"][0].update(start_time=base + span[0], end_time=base + span[1])
    message = error(pages)
    assert message.startswith("page 1, bucket 1: spans") and words in message


def test_an_anthropic_bucket_not_on_a_utc_day_is_refused():
    pages = load("anthropic_messages_by_model.json")
    pages[0]["data"][1].update(starting_at="2026-11-02T00:00:00+01:00", ending_at="2026-11-03T00:00:00+01:00")
    assert error(pages, "anthropic").startswith("page 1, bucket 2: spans 2026-11-01T23:00:00Z")


def test_a_repeated_page_is_refused_naming_both_places():
    pages = openai_pages()
    message = error([*pages, pages[1]])
    assert message.startswith("page 3, bucket 1 (2026-11-04T00:00:00Z): overlaps page 2, bucket 1")


@pytest.mark.parametrize(("body", "provider", "words"), [
    ([], "openai", "empty array"),
    ("text", "openai", "got string"),
    ({"object": "list", "data": []}, "openai", "page 1: not a page of GET /v1/organization/usage/completions: "
                                                "`object` must be \"page\""),
    ({"object": "page"}, "openai", "no `data` array"),
    ([{"object": "page", "data": []}, 7], "openai", "page 2: must be a page"),
])
def test_what_is_not_a_page_of_the_provider_is_refused(body, provider, words):
    assert words in error(body, provider)


def test_a_report_of_the_other_provider_is_recognised():
    assert "use provider=anthropic" in error(load("anthropic_messages_by_model.json"), "openai")
    assert "use provider=openai" in error(openai_pages(), "anthropic")


def test_an_openai_page_of_another_usage_endpoint_is_refused():
    pages = openai_pages()
    pages[0]["data"][0]["results"][0]["object"] = "organization.usage.embeddings.result"
    message = error(pages)
    assert message.startswith("page 1, bucket 1 (2026-11-01T00:00:00Z), result 1: `object` is "
                              "'organization.usage.embeddings.result'")


def test_a_report_not_grouped_by_model_is_refused():
    pages = openai_pages()
    pages[0]["data"][1]["results"][0]["model"] = None
    assert "result 1: model: is null" in error(pages) and "group_by=model" in error(pages)


def test_cached_tokens_beyond_input_are_refused():
    pages = openai_pages()
    result = pages[0]["data"][0]["results"][0]
    result["input_cached_tokens"] = result["input_tokens"]
    assert "exceed input_tokens" in error(pages)


def test_a_split_needs_the_report_grouped_by_that_field():
    split = rc.parse_split("openai", "project_id", "tag:project", None)
    assert "project_id: is null" in error(openai_pages(), split=split)
    by_project = rc.parse_report(load("openai_completions_by_project.json"), "openai", split=split)
    assert {g for (_, _, g) in by_project.cells} == {"proj_Alpha7Hq2", "proj_Beta9Kx4"}  # no map: ids as they are


@pytest.mark.parametrize(("args", "words"), [
    (("openai", "workspace_id", None, None), "split_by: a openai report can be split by project_id or api_key_id"),
    (("anthropic", "project_id", None, None), "split_by: a anthropic report can be split by workspace_id"),
    (("openai", None, "tag:project", None), "split_by: is required"),
    (("openai", "project_id", "account_id", None), "match_to: must be api_key_id or tag:NAME"),
    (("openai", "project_id", "tag:bad name", None), "match_to:"),
    (("openai", "project_id", None, ["proj_a"]), "map: expected PROVIDER_ID=OUR_VALUE, got 'proj_a'"),
    (("openai", "project_id", None, ["a=x,a=y"]), "map: 'a' is mapped twice"),
])
def test_bad_split_parameters_are_named(args, words):
    with pytest.raises(BadRequest) as info:
        rc.parse_split(*args)
    assert info.value.message.startswith(words)


@pytest.mark.parametrize(("start", "end", "words"), [
    ("1999-12-31", "2026-01-01", "start: must be between 2000-01-01 and 2100-01-01"),
    ("2026-01-01", "2100-01-02", "end: must be between 2000-01-01 and 2100-01-01"),
    ("2026-13-01", "2026-12-01", "start: not a date"),
    ("2026-11-01T00:00:00Z", "2026-12-01", "start: not a date"),
    ("2026-11-05", "2026-11-05", "end (2026-11-05) must be after start"),
])
def test_bad_dates_are_named(start, end, words):
    with pytest.raises(BadRequest) as info:
        rc.parse_range(start, end)
    assert info.value.message.startswith(words)


@pytest.mark.parametrize("value", ["-0.1", "1.5", "abc", "NaN", "Infinity"])
def test_a_tolerance_outside_0_to_1_is_refused(value):
    with pytest.raises(BadRequest) as info:
        rc.parse_tolerance(value)
    assert info.value.message.startswith("tolerance: must be a fraction from 0 to 1")


def test_models_take_names_and_patterns():
    models = rc.parse_models("gpt-*, o3-mini")
    assert "gpt-4.1" in models and "o3-mini" in models and "o3-mini-high" not in models
    assert "claude-sonnet-4-5" not in models
    assert rc.parse_models("") is None and rc.parse_models(None) is None


def test_counts_are_summed_over_results_of_other_groupings():
    page = copy.deepcopy(openai_pages()[0])
    first = page["data"][0]["results"][0]
    page["data"][0]["results"].append({**first, "service_tier": "flex", "batch": True})
    report = rc.parse_report(page, "openai")
    assert cells(report)[(date(2026, 11, 1), first["model"])]["input_tokens"] == 2 * first["input_tokens"]


def test_days_outside_the_range_are_left_out_and_listed():
    report = rc.parse_report(openai_pages(), "openai")
    result = rc.compare(report, [], CARD, start=date(2026, 11, 2), end=date(2026, 11, 3))
    assert {r["date"] for r in result["rows"]} == {"2026-11-02"}
    assert result["summary"]["days_outside_range"] == ["2026-11-01", "2026-11-03", "2026-11-04", "2026-11-05"]
    assert all(r["reasons"] == ["not in the ledger"] for r in result["rows"])


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70) | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=6,
)


def paths_of(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from paths_of(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from paths_of(v, (*prefix, i))


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@given(data=st.data())
@settings(max_examples=150, deadline=None, derandomize=True)
def test_any_mutation_of_a_report_is_read_or_refused_with_a_bad_request(provider, data):
    body = load("openai_completions_by_model.json" if provider == "openai" else "anthropic_messages_by_model.json")
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(list(paths_of(body))))
        value = data.draw(JSON_VALUES)
        if not path:
            body = value
            continue
        target = body
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value
    try:
        report = rc.parse_report(body, provider)
    except BadRequest as exc:
        assert exc.message and "Traceback" not in exc.message
        return
    result = rc.compare(report, [], CARD, start=date(2026, 11, 1), end=date(2026, 11, 6))
    for fmt in rc.FORMATS:
        assert rc.render(result, fmt)
