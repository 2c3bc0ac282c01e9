"""The dashboard in a real browser (Debian's chromium, driven by Playwright) against
`metering serve` on 127.0.0.1 with the demo's data. Screenshots of every view go to
test-artifacts/screenshots/ (git ignores it).

Every amount the page shows is checked against the API's exact figure and against the one money
format (`usd` below: dollars and cents, half-up; <$0.01 for a non-zero amount under half a cent;
an em dash for no amount)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import threading
import time
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import httpx
import openpyxl
import pyarrow.parquet as pq
import pytest

from tests.conftest import ADMIN, Server
from tests.e2e.conftest import require_chromium

pytestmark = [pytest.mark.e2e, pytest.mark.browser]
SHOTS = Path(__file__).parents[2] / "test-artifacts" / "screenshots"
VIEWS = {"overview": "Overview", "daily": "Daily spend", "keys": "Keys", "keys/key-07": "Key key-07",
         "budgets": "Budgets", "alerts": "Alerts", "documents": "Documents", "reconcile": "Reconciliation",
         "rates": "Rate card"}
KEY_SECRET = "sk_demo_key-01"
# The webhook endpoints of the budgets the fixture adds, so that the alerts have every delivery status.
WEBHOOKS = {"key-03": "ok", "key-04": "gone", "key-05": "broken"}

require_chromium()


def usd(text: str | None) -> str:
    """The dashboard's money format, written independently of its JavaScript."""
    if text is None:
        return "—"
    value = Decimal(text)
    cents = abs(value).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    sign = "-" if value < 0 else ""
    if cents == 0:
        return "$0.00" if value == 0 else f"{sign}<$0.01"
    return f"{sign}${cents:,.2f}"


def auth(token: str = ADMIN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def api(served, path: str, token: str = ADMIN) -> dict:
    return httpx.get(f"{served.url}{path}", headers=auth(token), timeout=30).json()


class Webhooks:
    """A receiver on 127.0.0.1: /ok answers 200, /gone 410 (the endpoint is disabled), /broken 500."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length", 0)))
                self.send_response({"/ok": 200, "/gone": 410}.get(self.path, 500))
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    db = tmp_path_factory.mktemp("dash") / "demo.duckdb"
    env = {**os.environ, "METERING_ADMIN_TOKEN": ADMIN}
    build = subprocess.run([sys.executable, "-m", "metering.cli", "demo", "--db", str(db), "--days", "21",
                            "--no-serve", "--quiet"], env=env, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr
    again = subprocess.run([sys.executable, "-m", "metering.cli", "demo", "--db", str(db), "--no-serve", "--quiet"],
                           env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "reusing" in again.stdout  # running it again reuses the data
    hooks = Webhooks()
    server = Server(db, extra_env={"METERING_WEBHOOK_RETRY_SCHEDULE": "0.05"}).start()
    for key, path in WEBHOOKS.items():
        r = httpx.post(f"{server.url}/v1/budgets", headers=auth(), timeout=30, json={
            "scope": {"api_key_id": key}, "period": "month", "amount": "0.01", "thresholds": [0.5],
            "webhook_url": f"{hooks.url}/{path}"})
        assert r.status_code == 201, r.text
    # An enforced budget with a hold of an open reservation (its card shows what is held).
    r = httpx.post(f"{server.url}/v1/budgets", headers=auth(), timeout=30, json={
        "scope": {"api_key_id": "key-06"}, "period": "month", "amount": "1000.00", "enforce": True})
    assert r.status_code == 201, r.text
    server.held_budget = r.json()["id"]
    r = httpx.post(f"{server.url}/v1/reservations", headers=auth(), timeout=30, json={
        "request_id": "dash-hold-1", "api_key_id": "key-06", "model": "minimax-m2-7", "max_input_tokens": 100_000,
        "max_output_tokens": 20_000, "ttl_seconds": 3600})
    assert r.status_code == 200 and r.json()["decision"] == "allow", r.text
    httpx.post(f"{server.url}/v1/budgets/check", headers=auth(), timeout=30)
    deadline = time.monotonic() + 20
    while {a["status"] for a in api(server, "/v1/alerts")["data"]} != {"delivered", "disabled", "failed", "no_endpoint"}:
        assert time.monotonic() < deadline, api(server, "/v1/alerts")
        time.sleep(0.1)
    yield server
    server.stop()
    hooks.close()


@pytest.fixture
def page_for(browser, served):
    """A signed-in page. `view`: open that view straight away, the token already in the tab's session
    storage (as after a sign-in), instead of signing in through the form onto the overview. `token=None`:
    the sign-in page."""
    pages = []

    def make(token: str | None, width: int = 1280, height: int = 800, view: str | None = None):
        context = browser.new_context(viewport={"width": width, "height": height}, accept_downloads=True)
        if view and token:
            context.add_init_script(f"sessionStorage.setItem('metering.token', {json.dumps(token)})")
        page = context.new_page()
        page.errors = []
        page.requests = []
        page.served = served
        page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: page.errors.append(str(e)))
        page.on("request", lambda r: page.requests.append(r))
        page.goto(f"{served.url}/dashboard/" + (f"#/{view}" if view else ""))
        if view and token:
            page.wait_for_selector("main h2")
        elif token:
            page.get_by_label("Token").fill(token)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_selector("main h2:has-text('Overview')")
        pages.append((page, token))
        return page

    yield make
    for page, token in pages:
        if token is None:
            continue
        # The token goes in the Authorization header only: never in a URL the page asks for or links to.
        assert not [r.url for r in page.requests if token in r.url]
        hrefs = page.evaluate("[...document.querySelectorAll('[href]')].map(a => a.getAttribute('href'))")
        assert not [x for x in hrefs if token in x]
        page.context.close()
    for page, token in pages:
        if token is None:
            page.context.close()


def show(page, view: str, title: str) -> None:
    page.goto(page.url.split("#")[0] + "#/" + view)
    page.wait_for_function("t => document.querySelector('main h2')?.textContent === t", arg=title)
    page.wait_for_load_state("networkidle")


def amounts_off_the_rule(page) -> list:
    """Every amount on the page in the one format: each .money element's text is usd() of its exact
    figure, no dollar sign appears outside one, and the chart axes follow the rule too."""
    found = page.evaluate("""() => {
      const out = {money: [], stray: []};
      for (const el of document.querySelectorAll('main .money'))
        out.money.push([el.textContent, el.dataset.exact === '' ? null : el.dataset.exact]);
      const walk = document.createTreeWalker(document.querySelector('main'), NodeFilter.SHOW_TEXT);
      while (walk.nextNode()) {
        const node = walk.currentNode;
        const inside = node.parentElement.closest('.money, svg, .rule');
        if (node.textContent.includes('$') && !inside) out.stray.push(node.textContent);
      }
      out.axis = [...document.querySelectorAll('main svg > text')].map(t => t.textContent).filter(t => t.includes('$'));
      return out;
    }""")
    wrong = [(text, exact) for text, exact in found["money"] if text != usd(exact)]
    axis = [t for t in found["axis"] if t != usd(t.replace("$", "").replace(",", "").replace("<", ""))]
    return wrong + found["stray"] + axis


def money_of(locator) -> tuple[str, str]:
    """(text, exact) of the one amount inside `locator`."""
    m = locator.locator(".money")
    return m.inner_text(), m.get_attribute("data-exact")


def assert_money(locator, api_value: str | None) -> None:
    text, exact = money_of(locator)
    assert (text, exact) == (usd(api_value), api_value or "")


# --- every view -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("width", "height"), [(1280, 800), (390, 844)])
def test_every_view_renders_for_admin_without_errors_at_both_sizes(page_for, width, height):
    page = page_for(ADMIN, width, height)
    SHOTS.mkdir(parents=True, exist_ok=True)
    for view, title in VIEWS.items():
        show(page, view, title)
        assert page.locator("main .error").count() == 0, page.locator("main").inner_text()
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"{view} scrolls sideways at {width}px"
        assert amounts_off_the_rule(page) == [], view
        if view == "budgets":
            held = api(page.served, f"/v1/budgets/{page.served.held_budget}/status")
            card = page.locator(f"[data-budget='{page.served.held_budget}'] .note")
            assert f"{usd(held['held'])} held by open reservations" in card.inner_text() and Decimal(held["held"]) > 0
        page.screenshot(path=SHOTS / f"admin-{view.replace('/', '-')}-{width}x{height}.png", full_page=True)
    assert page.errors == []
    assert "unpriced" in page.locator("#warning").inner_text()  # the demo has a model without a price


MONEY_CASES = ["0", "0.9697", "2.12", "2.125", "2.124999999999", "0.005", "0.004999999999", "0.000000000001",
               "-0.000000000001", "-0.005", "-0.004", "-1234.565", "999.995", "1234567.894999999999",
               "1000000000000.5", "12", "0.1", "35.342393058", "0.0002505"]


def test_one_money_format_exact_half_up_to_the_cent_issue_14(page_for):
    page = page_for(None)  # the module itself, as the sign-in page loads it
    got = page.evaluate("""async cases => {
      const m = await import(new URL('lib/money.js', document.baseURI).href);
      const bad = [];
      for (const x of ['1e-7', '0.1234567890123', 'abc', '', '1.', NaN]) {
        try { m.usd(x); } catch (e) { bad.push(e.name); }
      }
      return {out: cases.map(c => m.usd(c)), none: [m.usd(null), m.usd(undefined)], bad};
    }""", MONEY_CASES)
    assert got["out"] == [usd(c) for c in MONEY_CASES]
    assert got["out"][:4] == ["$0.00", "$0.97", "$2.12", "$2.13"]  # the issue's $0.9697 next to $2.12
    assert got["none"] == ["—", "—"]
    assert got["bad"] == ["TypeError"] * 6  # not an exact decimal string: refused, never guessed


# --- the overview -----------------------------------------------------------------------------------


def test_figures_shown_equal_the_api_and_the_overview_shows_its_cache_savings_and_projection_issue_12(page_for, served):
    page = page_for(ADMIN)
    show(page, "overview", "Overview")
    today = api(served, "/v1/usage?bucket=day")["buckets"][-1]["start"][:10]
    month = api(served, f"/v1/usage?start={today[:8]}01&end=2100-01-01&bucket=month")
    ov = api(served, "/v1/overview")
    check_overview(page, ov)  # cache savings, projection, classes, top keys and models, days: the API's
    assert_money(page.locator("[data-figure=mtd]"), ov["month_to_date"])
    assert ov["month_to_date"] == month["totals"]["cost"]
    assert_money(page.locator("[data-figure=spend]"), month["totals"]["cost"])
    assert_money(page.locator("[data-figure=list]"), month["totals"]["list_cost"])
    savings = Decimal(month["totals"]["list_cost"]) - Decimal(month["totals"]["cost"])
    assert page.locator("[data-figure=savings] .value").inner_text() == usd(str(savings))
    assert_money(page.locator("[data-figure=today]"), ov["today"])
    show(page, "daily", "Daily spend")
    daily = api(served, "/v1/usage?bucket=day")
    assert page.locator("[data-figure=daily-total]").inner_text().startswith(f"Total: {usd(daily['totals']['cost'])}")
    rows = page.locator("#days-table tbody tr")
    assert rows.count() == len(daily["buckets"])
    for i, bucket in enumerate(daily["buckets"]):
        cost = bucket["results"][0]["cost"] if bucket["results"] else "0"
        assert rows.nth(i).locator("td").nth(1).inner_text() == usd(cost)
    show(page, "keys/key-07", "Key key-07")
    key = api(served, "/v1/usage?bucket=day&api_key_id=key-07")
    assert_money(page.locator("[data-figure=key-cost]"), key["totals"]["cost"])
    show(page, "keys", "Keys")
    row = page.locator("#keys-table tr[data-key=key-01] td").all_inner_texts()
    month_keys = api(served, f"/v1/usage?start={today[:8]}01&end=2100-01-01&bucket=month&group_by=api_key_id")
    (k1,) = [r for r in month_keys["buckets"][0]["results"] if r["api_key_id"] == "key-01"]
    assert row[1] == usd(k1["cost"]) and row[2] == f"{k1['requests']:,}"


OVERVIEW_ON_PAGE = """() => {
  const m = el => el ? [el.textContent, el.dataset.exact] : null;
  const figure = id => m(document.querySelector(`[data-figure=${id}] .money`));
  const rows = sel => [...document.querySelectorAll(sel)];
  return {
    figures: Object.fromEntries(['spend', 'list', 'savings', 'cache', 'today', 'mtd', 'projected'].map(f => [f, figure(f)])),
    daily: rows('#daily-table tbody tr').map(r => [r.querySelector('th').textContent,
                                                   r.querySelector('.money').dataset.exact]),
    bars: new Set(rows('main svg rect[data-day]').map(r => r.dataset.day)).size,
    classes: rows('#class-table tbody tr').map(r => [r.dataset.class, ...[...r.querySelectorAll('.money')].map(m)]),
    total: rows('#class-table tfoot .money').map(m),
    keys: rows('#top-keys tbody tr').map(r => [r.dataset.key, m(r.querySelector('.money'))]),
    models: rows('#top-models tbody tr').map(r => [r.dataset.model, m(r.querySelector('.money'))]),
  };
}"""


def check_overview(page, ov: dict) -> None:
    """The overview on the page shows exactly the API's figures for the same period (read in one go)."""
    got = page.evaluate(OVERVIEW_ON_PAGE)
    t = ov["totals"]
    shown = lambda value: [usd(value), "" if value is None else value]  # noqa: E731 (text and exact figure; "" when none)
    assert got["figures"] == {"spend": shown(t["cost"]), "list": shown(t["list_cost"]), "savings": shown(t["savings"]),
                              "cache": shown(ov["by_class"]["cache_savings"]), "today": shown(ov["today"]),
                              "mtd": shown(ov["month_to_date"]), "projected": shown(ov["projected_month_end"])}
    assert got["daily"] == [[d["date"], d["cost"]] for d in ov["daily"]]
    assert got["bars"] == sum(1 for d in ov["daily"] if any(v and Decimal(v) > 0 for v in d["by_model"].values()))
    assert got["classes"] == [[c["token_class"], shown(c["cost"]), shown(c["list_cost"])] for c in ov["by_class"]["classes"]]
    assert got["total"] == [shown(t["cost"]), shown(t["list_cost"])]
    assert got["keys"] == [[k["api_key_id"], shown(k["cost"])] for k in ov["top_keys"]]
    assert got["models"] == [[m["model"], shown(m["cost"])] for m in ov["top_models"]]


def expected_range(preset: str, tz: str) -> tuple[date, date]:
    today = datetime.now(ZoneInfo(tz)).date()
    first = today.replace(day=1)
    return {
        "this-month": (first, today + timedelta(days=1)),
        "last-month": ((first - timedelta(days=1)).replace(day=1), first),
        "last-7": (today - timedelta(days=6), today + timedelta(days=1)),
        "last-30": (today - timedelta(days=29), today + timedelta(days=1)),
    }[preset]


def last_overview_query(page) -> dict[str, str]:
    (url,) = [r.url for r in page.requests if "/v1/overview" in r.url][-1:]
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def test_the_overview_period_picker_asks_for_each_period_and_shows_the_apis_figures_issue_14(page_for, served):
    page = page_for(ADMIN)
    show(page, "overview", "Overview")
    check_overview(page, api(served, "/v1/overview"))  # this month by default: the API's default too
    demo_days = [b["start"][:10] for b in api(served, "/v1/usage?bucket=day")["buckets"] if b["results"]]
    cases = [("last-month", "UTC", None), ("last-7", "Asia/Kolkata", None), ("last-30", "America/New_York", None),
             ("this-month", "Europe/Berlin", None), ("custom", "UTC", (demo_days[2], demo_days[6]))]
    for preset, tz, custom in cases:
        page.locator("select[name=period]").select_option(preset)
        page.locator("select[name=tz]").select_option(tz)
        if custom:
            page.get_by_label("From").fill(custom[0])
            page.get_by_label("Through").fill(custom[1])
            start, end = date.fromisoformat(custom[0]), date.fromisoformat(custom[1]) + timedelta(days=1)
        else:
            start, end = expected_range(preset, tz)
            # The dates shown are the preset's days (Through is the last day, inclusive).
            assert page.get_by_label("From").input_value() == start.isoformat()
            assert page.get_by_label("Through").input_value() == (end - timedelta(days=1)).isoformat()
        before = len(page.requests)
        page.get_by_role("button", name="Show").click()
        page.wait_for_function("n => document.querySelector('#period-text')?.textContent.startsWith(n)",
                               arg=f"{start} to {end - timedelta(days=1)} ({tz},")
        page.wait_for_load_state("networkidle")
        assert len(page.requests) > before
        assert last_overview_query(page) == {"start": start.isoformat(), "end": end.isoformat(), "tz": tz}
        assert f"period={preset}" in page.url
        ov = api(served, f"/v1/overview?start={start}&end={end}&tz={tz}")
        assert len(ov["daily"]) == (end - start).days
        check_overview(page, ov)
        assert amounts_off_the_rule(page) == []
    page.screenshot(path=SHOTS / "admin-overview-custom-range.png", full_page=True)
    page.reload()  # the period is in the address: a reload (or a bookmark) shows the same period
    page.wait_for_selector("#period-text")
    page.wait_for_load_state("networkidle")
    assert last_overview_query(page)["start"] == cases[-1][2][0]
    page.get_by_label("From").fill(demo_days[3])
    page.get_by_label("Through").fill(demo_days[1])  # before From: the form says so and asks nothing
    before = len(page.requests)
    page.get_by_role("button", name="Show").click()
    assert page.evaluate("document.querySelector('input[name=through]').validationMessage") != ""
    assert len(page.requests) == before
    assert page.errors == []


# --- keys, budgets, rates -----------------------------------------------------------------------------


def test_keys_table_sorts_by_a_column(page_for):
    page = page_for(ADMIN, view="keys")
    page.wait_for_selector("#keys-table")
    page.get_by_role("button", name="Requests").click()
    header = page.locator("th:has(button[data-sort=requests])")
    assert header.get_attribute("aria-sort") == "descending"
    counts = [int(x.replace(",", "")) for x in page.locator("#keys-table tbody tr td:nth-child(4)").all_inner_texts()]
    assert counts == sorted(counts, reverse=True) and len(counts) == 20
    page.keyboard.press("Enter")  # focus stays on the heading's button: the keyboard sorts too
    counts = [int(x.replace(",", "")) for x in page.locator("#keys-table tbody tr td:nth-child(4)").all_inner_texts()]
    assert counts == sorted(counts)
    assert header.get_attribute("aria-sort") == "ascending"


def test_the_rate_card_view_shows_each_model_and_its_prices_issue_11(page_for, served):
    page = page_for(ADMIN, view="rates")
    page.wait_for_selector("section[data-model]")
    text = page.locator("main").inner_text()
    assert "[object" not in text
    card = api(served, "/v1/rates")
    for model in card["models"]:
        section = page.locator(f"section[data-model='{model['model']}']")
        assert section.locator("h3").inner_text() == model["model"]
        latest = model["versions"][-1]
        cells = section.locator("tbody tr").last.inner_text()
        assert f"{latest['input']['current']} / {latest['input']['list']}" in cells
        assert f"{latest['output']['current']} / {latest['output']['list']}" in cells


def test_a_key_sees_a_wider_budget_only_as_exceeded_or_not_and_its_own_spend_issue_11(page_for, served):
    page = page_for(KEY_SECRET, view="budgets")
    page.wait_for_selector("[data-budget]")
    wide = [b for b in api(served, "/v1/budgets")["data"] if "all" in b["scope"]]
    assert wide
    text = page.locator("main").inner_text()
    for b in wide:
        full = api(served, f"/v1/budgets/{b['id']}/status")
        assert usd(full["spent"]) not in text and usd(full["amount"]) not in text
        card = page.locator(f"[data-budget='{b['id']}']")
        mine = api(served, f"/v1/budgets/{b['id']}/status", token=KEY_SECRET)
        assert_money(card.locator(".note"), mine["key_spent"])
    assert page.errors == []


# --- alerts -------------------------------------------------------------------------------------------


def alert_rows(page) -> list[dict]:
    return page.evaluate("""[...document.querySelectorAll('#alerts-table tbody tr')].map(tr => ({
      id: tr.dataset.alert, status: tr.dataset.status, type: tr.dataset.type,
      cells: [...tr.children].map(c => c.textContent)}))""")


def test_the_alerts_view_lists_every_alert_with_its_delivery_and_filters_by_status_and_type_issue_14(page_for, served):
    page = page_for(ADMIN, view="alerts")
    page.wait_for_selector("#alerts-table")
    alerts = api(served, "/v1/alerts")["data"]
    rows = alert_rows(page)
    assert [r["id"] for r in rows] == [a["id"] for a in reversed(alerts)]  # newest first
    by_id = {a["id"]: a for a in alerts}
    for row in rows:
        a = by_id[row["id"]]
        created, _type, _subject, threshold, spent, status, attempts, delivered = row["cells"]
        assert (row["status"], row["type"], attempts) == (a["status"], a["type"], str(a["attempts"]))
        assert created == a["created_at"][:16].replace("T", " ") + " UTC"
        assert delivered == (a["delivered_at"][:16].replace("T", " ") + " UTC" if a["delivered_at"] else "—")
        data = a["payload"]["data"]
        assert spent == (f"{usd(data['spent'])} of {usd(data['amount'])}" if "amount" in data else usd(data["spent"]))
        if a["type"] == "budget.threshold_crossed":
            assert threshold == f"{(Decimal(data['threshold']) * 100).quantize(Decimal('0.0001')).normalize():f}%"
    statuses = {a["status"] for a in alerts}
    assert statuses == {"delivered", "disabled", "failed", "no_endpoint"}
    for status in statuses:
        page.get_by_label("Status").select_option(status)
        shown = alert_rows(page)
        assert {r["id"] for r in shown} == {a["id"] for a in alerts if a["status"] == status}
        assert page.locator("[data-figure=alert-count]").inner_text() == f"{len(shown)} of {len(alerts)} alerts"
    page.get_by_label("Status").select_option("")
    page.get_by_label("Type").select_option("budget.forecast_exceeded")
    assert {r["id"] for r in alert_rows(page)} == {a["id"] for a in alerts if a["type"] == "budget.forecast_exceeded"}
    page.get_by_label("Status").select_option("delivered")  # no forecast alert was delivered
    assert alert_rows(page) == [] and "No alert matches" in page.locator("main").inner_text()
    page.get_by_label("Type").select_option("budget.threshold_crossed")
    assert {r["id"] for r in alert_rows(page)} == {a["id"] for a in alerts
                                                   if a["status"] == "delivered" and a["type"] == "budget.threshold_crossed"}
    assert "status=delivered" in page.url and "type=budget.threshold_crossed" in page.url
    page.screenshot(path=SHOTS / "admin-alerts-filtered.png", full_page=True)
    page.reload()  # the filters are in the address
    page.wait_for_selector("#alerts-table")
    assert {r["status"] for r in alert_rows(page)} == {"delivered"}
    assert page.errors == []


# --- documents ----------------------------------------------------------------------------------------


def fetch_document(served, path: str) -> httpx.Response:
    r = httpx.get(f"{served.url}{path}", headers=auth(), timeout=60)
    assert r.status_code == 200, r.text
    return r


def same_content(name: str, saved: bytes, expected: bytes) -> bool:
    if name.endswith(".parquet"):
        return pq.read_table(io.BytesIO(saved)).equals(pq.read_table(io.BytesIO(expected)))
    if name.endswith(".xlsx"):
        def cells(blob: bytes):
            book = openpyxl.load_workbook(io.BytesIO(blob))
            return [[list(r) for r in ws.iter_rows(values_only=True)] for ws in book.worksheets]
        return cells(saved) == cells(expected)
    return saved == expected


def test_documents_download_through_the_header_under_the_services_file_names_issue_14(page_for, served, tmp_path):
    page = page_for(ADMIN, view="documents")
    page.wait_for_selector("form[data-document=focus]")
    days = [b["start"][:10] for b in api(served, "/v1/usage?bucket=day")["buckets"] if b["results"]]
    start, through = days[1], days[8]
    end = (date.fromisoformat(through) + timedelta(days=1)).isoformat()
    month = days[-1][:7]
    daily = page.locator("form[data-document=daily]")
    daily.get_by_label("From").fill(start)
    daily.get_by_label("Through").fill(through)
    daily.get_by_label("Time zone").select_option("Asia/Kolkata")
    daily.get_by_label("Rows per").select_option("model")
    statement = page.locator("form[data-document=statement]")
    statement.get_by_label("Account").select_option("globex")
    statement.get_by_label("Month").fill(month)
    focus = page.locator("form[data-document=focus]")
    focus.get_by_label("From (UTC)").fill(start)
    focus.get_by_label("Through (UTC)").fill(through)
    cases = [(f"daily-{fmt}", f"/v1/reports/daily?start={start}&end={end}&tz=Asia%2FKolkata&group_by=model&format={fmt}")
             for fmt in ("csv", "xlsx", "parquet")]
    cases += [(f"statement-{fmt}", f"/v1/reports/statement?account=globex&month={month}&tz=UTC&format={fmt}")
              for fmt in ("csv", "xlsx")]
    cases += [(f"focus-{fmt}", f"/v1/reports/focus?start={start}&end={end}&format={fmt}") for fmt in ("csv", "parquet")]
    for button, path in cases:
        with page.expect_download() as got:
            page.locator(f"button[data-download={button}]").click()
        download = got.value
        assert download.url.startswith("blob:")  # saved from a Blob the page made: no token in any link
        expected = fetch_document(served, path)
        name = expected.headers["content-disposition"].split('filename="')[1].rstrip('"')
        assert download.suggested_filename == name, button
        saved = tmp_path / name
        download.save_as(saved)
        assert same_content(name, saved.read_bytes(), expected.content), button
        form = button.split("-")[0]
        page.wait_for_function("f => document.querySelector(`[data-figure=${f}-status]`).textContent.startsWith('Saved')",
                               arg=form)
        assert name in page.locator(f"[data-figure={form}-status]").inner_text()
        (asked,) = [r for r in page.requests if "/v1/reports/" in r.url and r.url.endswith(f"format={button.split('-')[1]}")
                    and f"/{form}?" in r.url]
        assert asked.all_headers()["authorization"] == f"Bearer {ADMIN}"
    rows = list(csv.reader(io.StringIO((tmp_path / f"daily-{start}-{end}.csv").read_text())))
    assert rows[0][0] == "date" and {r[0] for r in rows[1:-1]} <= set(days)  # the range and zone the form named
    # The keyboard works the buttons too.
    page.locator("button[data-download=focus-csv]").focus()
    with page.expect_download() as got:
        page.keyboard.press("Enter")
    assert got.value.suggested_filename == f"focus-{start}-{end}.csv"
    # A range that ends before it starts is refused in the form, and nothing is asked.
    before = len(page.requests)
    focus.get_by_label("Through (UTC)").fill(days[0])
    page.locator("button[data-download=focus-parquet]").click()
    assert page.evaluate("document.querySelector('form[data-document=focus] [name=through]').validationMessage") != ""
    assert len(page.requests) == before
    page.screenshot(path=SHOTS / "admin-documents-saved.png", full_page=True)
    assert page.errors == []


# --- reconciliation -----------------------------------------------------------------------------------


def openai_page(served, days: list[str], plant: dict) -> dict:
    """An OpenAI usage page (GET /v1/organization/usage/completions, bucket_width=1d, group_by=model) made
    from the demo's ledger, with the differences in `plant` ({(day, model): {field: delta}})."""
    buckets = []
    for day in days:
        start = datetime.fromisoformat(f"{day}T00:00:00+00:00")
        end = start + timedelta(days=1)
        usage = api(served, f"/v1/usage?start={day}&end={end.date()}&bucket=day&group_by=model")
        results = []
        for r in usage["buckets"][0]["results"]:
            result = {"object": "organization.usage.completions.result", "input_tokens": r["input_tokens"],
                      "output_tokens": r["output_tokens"], "input_cached_tokens": r["cached_tokens"],
                      "input_cache_write_tokens": r["cache_write_tokens"], "input_audio_tokens": 0,
                      "output_audio_tokens": 0, "num_model_requests": r["requests"], "project_id": None,
                      "user_id": None, "api_key_id": None, "model": r["model"], "batch": None, "service_tier": None}
            for field, delta in plant.get((day, r["model"]), {}).items():
                result[field] += delta
            results.append(result)
        buckets.append({"object": "bucket", "start_time": int(start.timestamp()), "end_time": int(end.timestamp()),
                        "results": results})
    return {"object": "page", "data": buckets, "has_more": False, "next_page": None}


def test_the_reconciliation_view_flags_exactly_the_planted_drifts_and_saves_the_documents_issue_15(
        page_for, served, tmp_path):
    page = page_for(ADMIN, 390, 844, view="reconcile")
    page.wait_for_selector("input[type=file]")
    days = [b["start"][:10] for b in api(served, "/v1/usage?bucket=day")["buckets"] if b["results"]][2:5]
    plant = {(days[0], "minimax-m2-7"): {"output_tokens": 1234}, (days[2], "minimax-m2-7-lite"): {"num_model_requests": -2}}
    pages = [openai_page(served, days[:2], plant), openai_page(served, days[2:], plant)]
    files = []
    for i, p in enumerate(pages, start=1):
        files.append(tmp_path / f"openai-page-{i}.json")
        files[-1].write_text(json.dumps(p, indent=2))
    end = (date.fromisoformat(days[-1]) + timedelta(days=1)).isoformat()
    page.locator("select[name=provider]").select_option("openai")
    page.get_by_label("From (UTC)").fill(days[0])
    page.get_by_label("Through (UTC)").fill(days[-1])
    page.get_by_label("Report files (JSON pages)").set_input_files([str(f) for f in files])
    page.get_by_role("button", name="Reconcile").click()
    page.wait_for_selector("#recon-table")
    params = {"provider": "openai", "start": days[0], "end": end}
    r = httpx.post(f"{served.url}/v1/reconcile", params=params, json=pages, headers=auth(), timeout=60)
    assert r.status_code == 200, r.text
    result = r.json()
    summary = result["summary"]
    rows = page.evaluate("""[...document.querySelectorAll('#recon-table tbody tr')].map(tr => ({
      row: tr.dataset.row, status: tr.dataset.status, cells: [...tr.children].map(c => c.textContent)}))""")
    assert [(x["row"], x["status"]) for x in rows] == [(f"{r['date']} {r['model']}", r["status"]) for r in result["rows"]]
    assert {x["row"] for x in rows if x["status"] == "drift"} == {f"{d} {m}" for d, m in plant}
    (output,) = [x for x in rows if x["row"] == f"{days[0]} minimax-m2-7"]
    # Columns: date, model, status, then the differences of the classes the report carries (OpenAI: requests,
    # input, cached, cache writes, output; not web searches), the three costs and the reasons.
    assert summary["not_reported"] == ["web_search_requests"]
    assert output["cells"][7] == "+1,234" and "output_tokens: openai" in output["cells"][-1]
    (requests,) = [x for x in rows if x["row"] == f"{days[2]} minimax-m2-7-lite"]
    assert requests["cells"][3] == "-2"
    for x, api_row in zip(rows, result["rows"], strict=True):
        assert x["cells"][8:11] == [usd(api_row["provider_cost"]), usd(api_row["ledger_cost"]),
                                    usd(api_row["cost_difference"])]
    for figure, value in (("recon-provider-cost", summary["provider_cost"]), ("recon-ledger-cost", summary["ledger_cost"]),
                          ("recon-cost-difference", summary["cost_difference"])):
        assert_money(page.locator(f"[data-figure={figure}]"), value)
    assert page.locator("[data-figure=recon-rows] .value").inner_text() == f"{summary['match']} match · 2 drift"
    assert "experimental-x" in page.locator("#recon-result .notes").inner_text()  # the demo's unpriced model
    page.get_by_label("Show").select_option("drift")
    assert page.locator("#recon-table tbody tr").count() == 2
    assert page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 1
    page.screenshot(path=SHOTS / "admin-reconcile-result-390x844.png", full_page=True)
    for fmt in ("csv", "xlsx"):
        with page.expect_download() as got:
            page.locator(f"button[data-download=recon-{fmt}]").click()
        download = got.value
        assert download.url.startswith("blob:")
        expected = httpx.post(f"{served.url}/v1/reconcile", params={**params, "format": fmt}, json=pages, headers=auth(),
                              timeout=60)
        name = expected.headers["content-disposition"].split('filename="')[1].rstrip('"')
        assert download.suggested_filename == name == f"reconcile-openai-{days[0]}-{end}.{fmt}"
        saved = tmp_path / name
        download.save_as(saved)
        assert same_content(name, saved.read_bytes(), expected.content)
    page.set_viewport_size({"width": 1280, "height": 800})
    page.screenshot(path=SHOTS / "admin-reconcile-result-1280x800.png", full_page=True)
    # Errors are named: a file that is not JSON (by the page), a report of the other provider (by the API).
    bad = tmp_path / "not-json.json"
    bad.write_text("{oops")
    page.get_by_label("Report files (JSON pages)").set_input_files(str(bad))
    page.get_by_role("button", name="Reconcile").click()
    page.wait_for_selector("main .error")
    assert "not-json.json: not JSON" in page.locator("main .error").inner_text()
    page.locator("select[name=provider]").select_option("anthropic")
    page.get_by_label("Report files (JSON pages)").set_input_files(str(files[0]))
    page.get_by_role("button", name="Reconcile").click()
    page.wait_for_function("() => document.querySelector('main .error')?.textContent.includes('use provider=openai')")
    assert page.locator("#recon-result").is_hidden()
    assert page.errors == [] or all("400" in e for e in page.errors)  # the refused POST, as chromium logs it


# --- a key's token ------------------------------------------------------------------------------------


def test_a_key_sees_only_itself_and_cannot_reach_another_keys_page(page_for, served):
    page = page_for(KEY_SECRET)
    SHOTS.mkdir(parents=True, exist_ok=True)
    assert page.locator("main h2").inner_text() == "Overview · key-01"
    assert KEY_SECRET not in page.url and ADMIN not in page.url
    assert page.evaluate("sessionStorage.getItem('metering.token')") == KEY_SECRET
    assert page.locator("#top-keys tbody tr").count() == 1
    check_overview(page, api(served, "/v1/overview", token=KEY_SECRET))
    for view in ("documents", "reconcile", "rates"):  # administrators' views: not offered
        assert page.locator(f"nav a[href='#/{view}']").is_hidden()
    show(page, "keys", "Keys")
    assert page.locator("#keys-table tbody tr").count() == 1
    page.screenshot(path=SHOTS / "key-keys.png", full_page=True)
    before = len(page.requests)
    show(page, "keys/key-02", "Key")
    assert "only your own key" in page.locator("[data-figure=denied]").inner_text()
    assert [r.url for r in page.requests[before:] if "/v1/" in r.url] == []  # asks the API nothing
    other = api(served, "/v1/usage?bucket=day&api_key_id=key-02")["totals"]["cost"]
    assert usd(other) not in page.locator("main").inner_text()
    page.screenshot(path=SHOTS / "key-denied.png", full_page=True)
    for view, title in (("overview", "Overview · key-01"), ("daily", "Daily spend"), ("keys/key-01", "Key key-01"),
                        ("budgets", "Budgets"), ("alerts", "Alerts"), ("documents", "Documents"),
                        ("reconcile", "Reconciliation"), ("rates", "Rate card")):
        before = len(page.requests)
        show(page, view, title)
        text = page.locator("main").inner_text()
        assert "key-02" not in text
        if view in ("documents", "reconcile", "rates"):
            assert "for administrators" in page.locator("[data-figure=admin-only]").inner_text()
            assert [r.url for r in page.requests[before:] if "/v1/" in r.url] == []
        assert amounts_off_the_rule(page) == []
        page.screenshot(path=SHOTS / f"key-{view.replace('/', '-')}.png", full_page=True)
    show(page, "alerts", "Alerts")
    mine = api(served, "/v1/alerts", token=KEY_SECRET)["data"]
    assert [r["id"] for r in alert_rows(page)] == [a["id"] for a in reversed(mine)]
    assert {a["budget_id"] for a in api(served, "/v1/alerts")["data"]} - {a["budget_id"] for a in mine}  # others exist
    assert page.errors == []


# --- accessibility and security -------------------------------------------------------------------------


CONTRAST = """sels => {
  const lum = c => { const [r, g, b] = c.match(/\\d+/g).slice(0, 3).map(Number).map(v => {
    v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  const contrast = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
  const bg = el => { while (el && getComputedStyle(el).backgroundColor === 'rgba(0, 0, 0, 0)') el = el.parentElement;
    return el ? getComputedStyle(el).backgroundColor : 'rgb(255, 255, 255)'; };
  return sels.flatMap(sel => [...document.querySelectorAll(sel)].slice(0, 3))
    .map(el => [el.className || el.tagName, contrast(getComputedStyle(el).color, bg(el))]);
}"""


def test_controls_are_labelled_and_text_is_readable(page_for):
    page = page_for(ADMIN)
    checked = headed = 0
    for view, title in (("overview", "Overview"), ("daily", "Daily spend"), ("keys", "Keys"), ("alerts", "Alerts"),
                        ("documents", "Documents"), ("reconcile", "Reconciliation")):
        show(page, view, title)
        unlabeled = page.evaluate("""[...document.querySelectorAll('input, select, textarea')]
            .filter(el => !el.labels?.length && !el.getAttribute('aria-label')).map(el => el.name)""")
        assert unlabeled == [], view
        checked += page.locator("main input, main select").count()
        headed += page.locator("main table th[scope=col]").count()
        ratios = page.evaluate(CONTRAST, ["main h2", "main td", ".muted", "nav a", "label", ".card .label", ".card .note",
                                          ".badge", "summary", "button"])
        assert ratios and min(r for _, r in ratios) >= 4.5, (view, ratios)
    assert checked >= 20 and headed >= 20
    page.keyboard.press("Tab")  # from the view (focused after each render) to its first control
    assert page.evaluate("document.activeElement.tagName") in ("A", "BUTTON", "INPUT", "SELECT")
    url = page.url
    page.locator("a.skip").focus()  # the page's first stop: the skip link, shown when focused
    assert page.evaluate("document.activeElement.getBoundingClientRect().left") >= 0
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main" and page.url == url


def test_the_dashboard_is_served_with_a_content_security_policy(served):
    r = httpx.get(f"{served.url}/dashboard/", timeout=30)
    assert r.status_code == 200 and "script-src 'self'" in r.headers["content-security-policy"]
    assert httpx.get(f"{served.url}/", timeout=30, follow_redirects=False).headers["location"] == "/dashboard/"
    for module in ("app.js", "lib/money.js", "views/reconcile.js"):
        m = httpx.get(f"{served.url}/dashboard/{module}", timeout=30)
        assert m.status_code == 200 and "javascript" in m.headers["content-type"]
        assert "innerHTML" not in m.text and "eval(" not in m.text
