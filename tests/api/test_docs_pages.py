"""/docs and /redoc without a browser: our pages, our assets, their headers. (In chromium with the
network closed: tests/e2e/test_docs_offline.py.)"""

from __future__ import annotations

import re

import pytest

from metering.api.docs import ASSETS, REDOC_CSP, SWAGGER_CSP


@pytest.mark.parametrize(("path", "csp"), [("/docs", SWAGGER_CSP), ("/redoc", REDOC_CSP)])
def test_the_pages_load_only_assets_of_this_host_with_no_inline_script(client, path, csp):
    r = client.get(path)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.headers["content-security-policy"] == csp and "script-src 'self';" in csp
    assert "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
    assert r.headers["x-content-type-options"] == "nosniff"
    sources = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assert sources and all(s.startswith("/docs/assets/") for s in sources), sources
    assert all(client.get(s).status_code == 200 for s in sources)
    assert "<script>" not in r.text and "<style" not in r.text and " style=" not in r.text  # nothing inline


def test_every_asset_is_served_with_its_type_and_nothing_else_is(client):
    for name, (path, media_type) in ASSETS.items():
        r = client.get(f"/docs/assets/{name}")
        assert r.status_code == 200 and r.headers["content-type"].split(";")[0] == media_type
        assert r.content == path.read_bytes()
    r = client.get("/docs/assets/core.py")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert client.get("/docs/assets/..%2F..%2Fsettings.py").status_code == 404


def test_swagger_is_started_without_the_online_validator(client):
    assert "validatorUrl: null" in client.get("/docs/assets/swagger-init.js").text
