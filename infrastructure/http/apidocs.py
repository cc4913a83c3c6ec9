"""The interactive API page (/api/v1/docs): Swagger UI from this server, never from a CDN.

FastAPI's own page loads Swagger UI from a CDN, so it is blank on a machine without internet.
Here the page is FastAPI's (get_swagger_ui_html), its script and style are those that the
fastapi-offline package ships (swagger-ui-dist, refreshed with its releases), served from fixed
names, never a path joined onto a folder. The page's Content-Security-Policy allows scripts from
this server plus the one inline script that starts Swagger UI, by its hash: nothing else inline.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, Response

API = "/api/v1"
SWAGGER = Path(str(files("fastapi_offline") / "static"))
ASSETS = {
    "swagger-ui-bundle.js": ("text/javascript; charset=utf-8", SWAGGER / "swagger-ui-bundle.js"),
    "swagger-ui.css": ("text/css; charset=utf-8", SWAGGER / "swagger-ui.css"),
}

router = APIRouter(include_in_schema=False)


def _page() -> tuple[bytes, str]:
    """The page and its Content-Security-Policy (the inline start-up script by its hash)."""
    html = get_swagger_ui_html(
        openapi_url=f"{API}/openapi.json",
        title="TwinLedger API",
        swagger_js_url=f"{API}/docs/swagger-ui-bundle.js",
        swagger_css_url=f"{API}/docs/swagger-ui.css",
        swagger_favicon_url="/static/favicon.svg",
    ).body
    inline = re.findall(rb"<script>(.*?)</script>", bytes(html), flags=re.DOTALL)
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
        for script in inline
    )
    policy = (
        f"default-src 'self'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    )
    return bytes(html), policy


PAGE, POLICY = _page()
HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


@router.get("/docs")
def docs_page() -> HTMLResponse:
    """Swagger UI on this API's OpenAPI schema."""
    return HTMLResponse(PAGE, headers={**HEADERS, "Content-Security-Policy": POLICY})


@router.get("/docs/{name}")
def docs_asset(name: str) -> Response:
    found = ASSETS.get(name)
    if found is None:
        return Response(status_code=404, content="not found", media_type="text/plain")
    media_type, path = found
    return FileResponse(path, media_type=media_type, headers=HEADERS)
