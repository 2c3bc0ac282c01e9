"""/docs (Swagger UI) and /redoc (ReDoc) in a real browser (Debian's chromium, driven by Playwright)
against `metering serve` on 127.0.0.1, with every request to any other host aborted: the pages
render the API's operations from packaged assets alone, under their Content-Security-Policy,
and never try to reach another host."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
import pytest

from metering.api.docs import REDOC_CSP, SWAGGER_CSP
from tests.conftest import Server
from tests.e2e.conftest import require_chromium

pytestmark = [pytest.mark.e2e, pytest.mark.browser]
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"

require_chromium()

# Collects the page's Content-Security-Policy violations (Playwright's init scripts are not
# subject to the page's policy).
CSP_LISTENER = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation",
    (e) => window.__cspViolations.push(e.violatedDirective + " " + e.blockedURI));
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    server = Server(tmp_path_factory.mktemp("docs") / "docs.duckdb").start()
    yield server
    server.stop()


@pytest.fixture
def offline_page(browser):
    """A page whose every request off 127.0.0.1 is aborted and recorded."""
    context = browser.new_context()
    outside: list[str] = []

    def route(r) -> None:
        if urlsplit(r.request.url).hostname == "127.0.0.1":
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort("internetdisconnected")

    context.route("**/*", route)
    context.add_init_script(CSP_LISTENER)
    page = context.new_page()
    page.errors = []
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.outside = outside
    yield page
    context.close()


def operations(served) -> set[tuple[str, str]]:
    spec = httpx.get(f"{served.url}/openapi.json").json()
    return {(method.upper(), path) for path, item in spec["paths"].items() for method in item}


def test_swagger_ui_lists_every_operation_offline_under_its_csp(served, offline_page):
    page = offline_page
    response = page.goto(f"{served.url}/docs")
    assert response.status == 200
    assert response.headers["content-security-policy"] == SWAGGER_CSP
    page.locator('.opblock-post .opblock-summary-path[data-path="/v1/usage"]').wait_for(timeout=20_000)
    assert page.locator('.opblock-post .opblock-summary-path[data-path="/v1/traces"]').is_visible()
    shown = {(block.locator(".opblock-summary-method").inner_text().strip(),
              block.locator(".opblock-summary-path").get_attribute("data-path"))
             for block in page.locator(".opblock").all()}
    assert shown == operations(served)
    assert page.outside == []
    assert page.evaluate("window.__cspViolations") == []
    assert page.errors == []


def test_redoc_lists_the_operations_offline_under_its_csp(served, offline_page):
    page = offline_page
    response = page.goto(f"{served.url}/redoc")
    assert response.status == 200
    assert response.headers["content-security-policy"] == REDOC_CSP
    heading = page.get_by_role("heading", name="Ingest usage records: one JSON object, a JSON array, or NDJSON")
    heading.wait_for(timeout=20_000)
    assert page.get_by_role("heading", name="Ingest OpenTelemetry spans", exact=False).first.is_visible()
    assert page.outside == []
    # ReDoc's bundle always shows its vendor's logo from a CDN in the menu's footer (no option turns it
    # off): the policy refuses it before any request is made, and ReDoc hides the broken image.
    assert page.evaluate("window.__cspViolations") == [f"img-src {REDOC_LOGO}"]
    assert [e for e in page.errors if REDOC_LOGO not in e] == []


def test_the_pages_name_no_other_host(served):
    for path in ("/docs", "/redoc"):
        html = httpx.get(f"{served.url}{path}").text
        assert "http" not in html.replace(served.url, ""), html  # every URL in the page is relative to this host
