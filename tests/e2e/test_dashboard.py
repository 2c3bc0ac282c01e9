"""The dashboard in a real browser (Debian's chromium, driven by Playwright) against
`metering serve` on 127.0.0.1 with the demo's data. Screenshots of every view go to
test-artifacts/screenshots/ (git ignores it)."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN, Server

pytestmark = [pytest.mark.e2e, pytest.mark.browser]
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).parents[2] / "test-artifacts" / "screenshots"
VIEWS = {"overview": "Overview", "daily": "Daily spend", "keys": "Keys", "keys/key-07": "Key key-07",
         "budgets": "Budgets", "rates": "Rate card"}
KEY_SECRET = "sk_demo_key-01"

if not CHROMIUM.exists():
    message = "Debian's chromium is not installed: run `apt-get install chromium` (as root)"
    if os.environ.get("METERING_REQUIRE_BROWSER"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message, allow_module_level=True)

from playwright.sync_api import sync_playwright  # noqa: E402 (only with a browser)


def usd(text: str) -> str:
    """The dashboard's money format: exact, half-up, 4 places under a dollar, else 2."""
    value = Decimal(text)
    places = Decimal("0.0001") if abs(value) < 1 else Decimal("0.01")
    rounded = value.quantize(places, rounding=ROUND_HALF_UP)
    whole, _, frac = f"{abs(rounded):f}".partition(".")
    return f"{'-' if rounded < 0 else ''}${int(whole):,}.{frac}"


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
    server = Server(db).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield b
        b.close()


@pytest.fixture
def page_for(browser, served):
    pages = []

    def make(token: str, width: int = 1280, height: int = 800):
        context = browser.new_context(viewport={"width": width, "height": height})
        page = context.new_page()
        page.errors = []
        page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: page.errors.append(str(e)))
        page.goto(f"{served.url}/dashboard/")
        page.get_by_label("Token").fill(token)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_selector("main h2:text-is('Overview'), main h2:has-text('Overview')")
        pages.append(page)
        return page

    yield make
    for page in pages:
        page.context.close()


def show(page, view: str, title: str) -> None:
    page.goto(page.url.split("#")[0] + "#/" + view)
    page.wait_for_function("t => document.querySelector('main h2')?.textContent === t", arg=title)
    page.wait_for_load_state("networkidle")


def api(served, path: str, token: str = ADMIN) -> dict:
    return httpx.get(f"{served.url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=30).json()


@pytest.mark.parametrize(("width", "height"), [(1280, 800), (390, 844)])
def test_every_view_renders_for_admin_without_errors_at_both_sizes(page_for, width, height):
    page = page_for(ADMIN, width, height)
    SHOTS.mkdir(parents=True, exist_ok=True)
    for view, title in VIEWS.items():
        show(page, view, title)
        assert page.locator("main .error").count() == 0, page.locator("main").inner_text()
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"{view} scrolls sideways at {width}px"
        page.screenshot(path=SHOTS / f"admin-{view.replace('/', '-')}-{width}x{height}.png", full_page=True)
    assert page.errors == []
    assert "unpriced" in page.locator("#warning").inner_text()  # the demo has a model without a price


def test_figures_shown_equal_the_api(page_for, served):
    page = page_for(ADMIN)
    show(page, "overview", "Overview")
    today = api(served, "/v1/usage?bucket=day")["buckets"][-1]["start"][:10]
    month = api(served, f"/v1/usage?start={today[:8]}01&end=2100-01-01&bucket=month")
    assert page.locator("[data-figure=mtd] .value").inner_text() == usd(month["totals"]["cost"])
    assert page.locator("[data-figure=list] .value").inner_text() == usd(month["totals"]["list_cost"])
    savings = Decimal(month["totals"]["list_cost"]) - Decimal(month["totals"]["cost"])
    assert page.locator("[data-figure=savings] .value").inner_text() == usd(str(savings))
    show(page, "daily", "Daily spend")
    daily = api(served, "/v1/usage?bucket=day")
    assert page.locator("[data-figure=daily-total]").inner_text().startswith(f"Total: {usd(daily['totals']['cost'])}")
    show(page, "keys/key-07", "Key key-07")
    key = api(served, "/v1/usage?bucket=day&api_key_id=key-07")
    assert page.locator("[data-figure=key-cost] .value").inner_text() == usd(key["totals"]["cost"])
    show(page, "keys", "Keys")
    row = page.locator("#keys-table tr[data-key=key-01] td").all_inner_texts()
    month_keys = api(served, f"/v1/usage?start={today[:8]}01&end=2100-01-01&bucket=month&group_by=api_key_id")
    (k1,) = [r for r in month_keys["buckets"][0]["results"] if r["api_key_id"] == "key-01"]
    assert row[1] == usd(k1["cost"]) and row[2] == f"{k1['requests']:,}"


def test_keys_table_sorts_by_a_column(page_for):
    page = page_for(ADMIN)
    show(page, "keys", "Keys")
    page.get_by_role("button", name="Requests").click()
    header = page.locator("th:has(button[data-sort=requests])")
    assert header.get_attribute("aria-sort") == "descending"
    counts = [int(x.replace(",", "")) for x in page.locator("#keys-table tbody tr td:nth-child(4)").all_inner_texts()]
    assert counts == sorted(counts, reverse=True) and len(counts) == 20
    page.get_by_role("button", name="Requests ▼").click()
    counts = [int(x.replace(",", "")) for x in page.locator("#keys-table tbody tr td:nth-child(4)").all_inner_texts()]
    assert counts == sorted(counts)


def test_a_key_sees_only_itself_and_cannot_reach_another_keys_page(page_for, served):
    page = page_for(KEY_SECRET)
    SHOTS.mkdir(parents=True, exist_ok=True)
    assert page.locator("main h2").inner_text() == "Overview · key-01"
    assert KEY_SECRET not in page.url and ADMIN not in page.url
    assert page.evaluate("sessionStorage.getItem('metering.token')") == KEY_SECRET
    show(page, "keys", "Keys")
    assert page.locator("#keys-table tbody tr").count() == 1
    page.screenshot(path=SHOTS / "key-keys.png", full_page=True)
    show(page, "keys/key-02", "Key")
    assert "only your own key" in page.locator("[data-figure=denied]").inner_text()
    other = api(served, "/v1/usage?bucket=day&api_key_id=key-02")["totals"]["cost"]
    assert usd(other) not in page.locator("main").inner_text()
    page.screenshot(path=SHOTS / "key-denied.png", full_page=True)
    for view, title in (("overview", "Overview · key-01"), ("daily", "Daily spend"), ("keys/key-01", "Key key-01"),
                        ("budgets", "Budgets"), ("rates", "Rate card")):
        show(page, view, title)
        assert "key-02" not in page.locator("main").inner_text()
        page.screenshot(path=SHOTS / f"key-{view.replace('/', '-')}.png", full_page=True)
    assert page.errors == []


def test_controls_are_labelled_and_text_is_readable(page_for):
    page = page_for(ADMIN)
    show(page, "daily", "Daily spend")
    unlabeled = page.evaluate("""[...document.querySelectorAll('input, select')]
        .filter(el => !el.labels?.length && !el.getAttribute('aria-label')).length""")
    assert unlabeled == 0
    assert page.locator("table th[scope=col]").count() >= 4
    ratios = page.evaluate("""() => {
      const lum = c => { const [r, g, b] = c.match(/\\d+/g).slice(0, 3).map(Number).map(v => {
        v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
        return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
      const contrast = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
      const bg = el => { while (el && getComputedStyle(el).backgroundColor === 'rgba(0, 0, 0, 0)') el = el.parentElement;
        return el ? getComputedStyle(el).backgroundColor : 'rgb(255, 255, 255)'; };
      return ['main h2', 'main td', '.muted', 'nav a', 'label', '.card .label']
        .map(sel => document.querySelector(sel)).filter(Boolean)
        .map(el => contrast(getComputedStyle(el).color, bg(el)));
    }""")
    assert ratios and min(ratios) >= 4.5, ratios
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.tagName") in ("A", "BUTTON", "INPUT")


def test_the_dashboard_is_served_with_a_content_security_policy(served):
    r = httpx.get(f"{served.url}/dashboard/", timeout=30)
    assert r.status_code == 200 and "script-src 'self'" in r.headers["content-security-policy"]
    assert httpx.get(f"{served.url}/", timeout=30, follow_redirects=False).headers["location"] == "/dashboard/"


def test_the_rate_card_view_shows_each_model_and_its_prices_issue_11(page_for, served):
    page = page_for(ADMIN)
    show(page, "rates", "Rate card")
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
    page = page_for(KEY_SECRET)
    show(page, "budgets", "Budgets")
    wide = [b for b in api(served, "/v1/budgets")["data"] if "all" in b["scope"]]
    assert wide
    text = page.locator("main").inner_text()
    for b in wide:
        full = api(served, f"/v1/budgets/{b['id']}/status")
        assert usd(full["spent"]) not in text and usd(full["amount"]) not in text
        card = page.locator(f"[data-budget='{b['id']}']")
        mine = api(served, f"/v1/budgets/{b['id']}/status", token=KEY_SECRET)
        assert usd(mine["key_spent"]) in card.inner_text()
    assert page.errors == []


def test_the_overview_shows_the_apis_figures_for_cache_savings_and_projection_issue_12(page_for, served):
    page = page_for(ADMIN)
    show(page, "overview", "Overview")
    ov = api(served, "/v1/overview")
    assert page.locator("[data-figure=cache] .value").inner_text() == usd(ov["by_class"]["cache_savings"])
    assert page.locator("[data-figure=projected] .value").inner_text() == usd(ov["projected_month_end"])
