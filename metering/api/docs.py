"""/docs (Swagger UI) and /redoc (ReDoc) from packaged assets, under a strict Content-Security-Policy.

FastAPI's own pages load Swagger UI and ReDoc from a CDN (blank offline) and start them with an
inline script. Here the bundles come from the `fastapi-offline` package (its static files) and the
pages are ours: no inline script or style, so the policy allows scripts and styles from this host only.
"""

from __future__ import annotations

from html import escape
from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse

from metering.errors import NotFound

BUNDLES = Path(str(files("fastapi_offline") / "static"))
OURS = Path(__file__).with_name("docs_static")
ASSETS = {  # name -> (file, media type); nothing else is served
    "swagger-ui-bundle.js": (BUNDLES / "swagger-ui-bundle.js", "text/javascript"),
    "swagger-ui.css": (BUNDLES / "swagger-ui.css", "text/css"),
    "redoc.standalone.js": (BUNDLES / "redoc.standalone.js", "text/javascript"),
    "favicon.png": (BUNDLES / "favicon.png", "image/png"),
    "swagger-init.js": (OURS / "swagger-init.js", "text/javascript"),
    "docs.css": (OURS / "docs.css", "text/css"),
}
_COMMON = ("default-src 'none'; script-src 'self'; img-src 'self' data:; font-src 'self'; connect-src 'self'; "
           "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SWAGGER_CSP = f"{_COMMON}; style-src 'self'"
# ReDoc's styled-components writes <style> elements at run time, and its search index runs in a
# worker started from a blob: URL; neither can load or run anything from elsewhere.
REDOC_CSP = f"{_COMMON}; style-src 'self' 'unsafe-inline'; worker-src blob:"
_SECURITY = {"x-content-type-options": "nosniff", "referrer-policy": "no-referrer"}

router = APIRouter(include_in_schema=False)


def _page(title: str, head: str, body: str, csp: str) -> HTMLResponse:
    html = (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{escape(title)}</title>\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n{head}</head>\n<body>\n{body}'
            '</body>\n</html>\n')
    return HTMLResponse(html, headers={"content-security-policy": csp, **_SECURITY})


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    assets = escape(f"{root}/docs/assets")
    openapi = escape(f"{root}{request.app.openapi_url}")
    return _page(
        f"{request.app.title} - Swagger UI",
        f'<link rel="icon" href="{assets}/favicon.png">\n<link rel="stylesheet" href="{assets}/swagger-ui.css">\n',
        f'<div id="swagger-ui"></div>\n<script src="{assets}/swagger-ui-bundle.js"></script>\n'
        f'<script src="{assets}/swagger-init.js" data-openapi-url="{openapi}"></script>\n',
        SWAGGER_CSP,
    )


@router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    assets = escape(f"{root}/docs/assets")
    openapi = escape(f"{root}{request.app.openapi_url}")
    return _page(
        f"{request.app.title} - ReDoc",
        f'<link rel="icon" href="{assets}/favicon.png">\n<link rel="stylesheet" href="{assets}/docs.css">\n',
        f'<redoc spec-url="{openapi}"></redoc>\n<script src="{assets}/redoc.standalone.js"></script>\n',
        REDOC_CSP,
    )


@router.get("/docs/assets/{name}")
def asset(name: str) -> FileResponse:
    if name not in ASSETS:
        raise NotFound(f"no documentation asset {name!r}")
    path, media_type = ASSETS[name]
    return FileResponse(path, media_type=media_type, headers={**_SECURITY, "cache-control": "public, max-age=86400"})
