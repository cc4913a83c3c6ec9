"""The dashboard: static pages served by the API's own process, each at a bookmarkable address.

Pages are HTML + JavaScript that read the JSON API under /api/v1 (docs/dashboard.md); nothing
here touches the ledger. The files ship inside the package (infrastructure/http/static), the
chart library included, so a dashboard works on a machine without internet. Only the files
listed at import time are served: a request path is a key in that list, never joined onto a
folder, so no path can reach outside it.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, Response

STATIC = Path(__file__).parent / "static"

# Scripts and styles from this server only; no inline script, no framing, no referrer leaks.
# Inline style attributes are allowed: the chart library sizes its elements with them.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
}


def _files() -> dict[str, Path]:
    return {
        path.relative_to(STATIC).as_posix(): path
        for path in sorted(STATIC.rglob("*"))
        if path.is_file() and not path.name.endswith(".html")
    }


ASSETS = _files()

router = APIRouter(include_in_schema=False)


def _page(name: str) -> FileResponse:
    return FileResponse(STATIC / f"{name}.html", headers=SECURITY_HEADERS)


@router.get("/")
def overview() -> FileResponse:
    """Twins, recent runs, projection lag, and a form that starts a run."""
    return _page("overview")


@router.get("/twins/{twin_id}")
def twin_page(twin_id: str) -> FileResponse:
    return _page("twin")


@router.get("/runs/{run_id}")
def run_page(run_id: str) -> FileResponse:
    """Per-year charts, live progress, key events, time travel and replay."""
    return _page("run")


@router.get("/compare")
def compare_page() -> FileResponse:
    """/compare?runs=A,B,...: 2 to 6 runs overlaid (the page reads ``runs`` itself)."""
    return _page("compare")


@router.get("/experiments/{experiment_id}")
def experiment_page(experiment_id: str) -> FileResponse:
    return _page("experiment")


@router.get("/static/{name:path}")
def asset(name: str) -> Response:
    path = ASSETS.get(name)
    if path is None:
        return Response(status_code=404, content="not found", media_type="text/plain")
    media_type = MEDIA_TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0]
    return FileResponse(
        path, media_type=media_type or "application/octet-stream", headers=SECURITY_HEADERS
    )
