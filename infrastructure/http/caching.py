"""Validators for what no longer changes: an ended run's results, events and states.

An ended run's stream is closed, so what these GET endpoints answer is a function of the run's
last version, its results rows (retention may remove some: their count is in the tag), the
request's query and the server's code (a new release may render differently). The tag is a
hash of those, computed before the body is read, so a client that holds it gets 304 Not Modified
without the server reading or encoding anything more. A run under way gets no tag.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import metadata
from pathlib import Path

from fastapi import Request, Response

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("domain", "projections", "infrastructure")
RENDERING_LIBRARIES = ("fastapi", "pydantic", "msgspec", "eventsourcing")
HEADERS = {"Cache-Control": "no-cache"}  # store, but ask every time (retention may change it)


@cache
def build() -> str:
    """The server's code and the libraries that shape its JSON: the same build answers the same
    bytes for the same stored data."""
    digest = hashlib.sha256()
    for name in RENDERING_LIBRARIES:
        digest.update(f"{name}={metadata.version(name)}\0".encode())
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()


def entity_tag(*parts: object) -> str:
    """A strong entity tag for a representation made of ``parts`` by this build."""
    text = "\0".join(str(part) for part in (build(), *parts))
    return '"' + hashlib.sha256(text.encode()).hexdigest()[:32] + '"'


def matches(request: Request, tag: str) -> bool:
    """If-None-Match names ``tag`` (or is ``*``): RFC 9110 weak comparison, as it requires."""
    header = request.headers.get("if-none-match")
    if header is None:
        return False
    if header.strip() == "*":
        return True
    return tag in (candidate.strip().removeprefix("W/") for candidate in header.split(","))


def not_modified(request: Request, tag: str | None) -> Response | None:
    """304 Not Modified if the client holds ``tag``; None to answer in full (None: no tag)."""
    if tag is None or not matches(request, tag):
        return None
    return Response(status_code=304, headers={"ETag": tag, **HEADERS})


def mark(response: Response, tag: str | None) -> None:
    """Give a full answer its tag (nothing for a run under way)."""
    if tag is not None:
        response.headers["ETag"] = tag
        response.headers.update(HEADERS)
