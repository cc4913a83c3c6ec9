"""The HTTP server: the JSON API under /api/v1 and the dashboard, in one FastAPI application.

``create_app`` wires what the routes need: a small pool of service-layer ledgers (one per
request at a time: a Ledger is not for concurrent use), the background executor of runs, and
the log follower that keeps the read tables current and feeds live progress. Around the routes:
the request guard (body and query limits, strict JSON, the bearer token for writes, read-only
mode) and the error mapping (422 naming the field, 404, 409; never a stack trace). docs/http.md.
"""

from __future__ import annotations

import hmac
import logging
import os
import queue
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import msgspec
from eventsourcing.persistence import InterfaceError, OperationalError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from domain.errors import (
    ConcurrentWrite,
    ExperimentBusy,
    InvalidTransition,
    NotFound,
    NothingToVerify,
    RunBusy,
    TwinLedgerError,
    ValidationError,
)
from domain.replay import EngineVersionMismatch
from infrastructure.errors import RunInterrupted, StoreError
from infrastructure.http.executor import Executor, ServerExecutor, resume
from infrastructure.http.orphans import OrphanWatch
from infrastructure.http.sse import LogFollower
from infrastructure.service import Ledger, ReadTablesBehind
from infrastructure.settings import resolve_database
from projections.runner import TRANSIENT as STORE_TRANSIENT

TRANSIENT = (*STORE_TRANSIENT, OperationalError, InterfaceError)
"""The database went away or is locked (drivers' errors, and eventsourcing's wrappers of them):
503, and the pooled ledger that met it is closed rather than reused."""

log = logging.getLogger("twinledger.http")

API = "/api/v1"
TOKEN_VARIABLE = "TWINLEDGER_API_TOKEN"
MAX_BODY_BYTES = 256 * 1024  # a body file is at most 64 KiB; a spec is smaller
MAX_QUERY_BYTES = 8 * 1024
MAX_JSON_DEPTH = 32
POOL_WAIT_SECONDS = 30.0
READS = frozenset({"GET", "HEAD", "OPTIONS"})


class Busy(Exception):
    """Every ledger of the pool stayed in use for POOL_WAIT_SECONDS."""


@dataclass
class Settings:
    url: str | None = None
    read_only: bool = False
    token: str | None = field(default_factory=lambda: os.environ.get(TOKEN_VARIABLE) or None)
    workers: int = 1
    scheduler: str | None = None  # a Dask scheduler (docs/scale-out.md); None: local
    resume_queued: bool = True  # on start: queued and orphaned runs, orphaned experiments
    resume_every: float = 10.0  # and orphaned runs and experiments while it runs, this often (s)
    pool_size: int = 4
    cors_origins: list[str] = field(default_factory=list)
    poll_seconds: float = 0.25


class LedgerPool:
    """Up to ``size`` open Ledgers, handed out one per request; a broken one is dropped."""

    def __init__(self, url: str, size: int) -> None:
        self.url = url
        self.size = size
        self._idle: queue.LifoQueue[Ledger] = queue.LifoQueue()
        self._opened = 0
        self._lock = threading.Lock()

    @contextmanager
    def ledger(self) -> Iterator[Ledger]:
        ledger = self._take()
        try:
            yield ledger
        except TRANSIENT:
            self._drop(ledger)  # the connection may be gone: open a fresh one next time
            raise
        except BaseException:
            self._idle.put(ledger)
            raise
        else:
            self._idle.put(ledger)

    def _take(self) -> Ledger:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            fresh = self._opened < self.size
            if fresh:
                self._opened += 1
        if fresh:
            try:
                # No DDL: the lifespan created everything once; concurrent CREATE OR REPLACE
                # statements of ledgers opened at the same moment collide in PostgreSQL's catalog.
                return Ledger.open(
                    self.url, create_tables=False, catch_up_reads=False, warn=log.warning
                )
            except BaseException:
                with self._lock:
                    self._opened -= 1
                raise
        try:
            return self._idle.get(timeout=POOL_WAIT_SECONDS)
        except queue.Empty:
            raise Busy() from None

    def _drop(self, ledger: Ledger) -> None:
        with self._lock:
            self._opened -= 1
        try:
            ledger.close()
        except Exception:  # closing a broken connection may fail too
            log.debug("closing a broken ledger failed", exc_info=True)

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


# --- errors -----------------------------------------------------------------------------------


def problem(status: int, detail: str, field_name: str | None = None, **extra: Any) -> JSONResponse:
    """The one error body: ``detail`` (a sentence naming the field) and ``field``."""
    return JSONResponse({"detail": detail, "field": field_name, **extra}, status_code=status)


def _status(error: TwinLedgerError) -> int:
    if isinstance(error, ReadTablesBehind):
        return 503
    if isinstance(error, NotFound):
        return 404
    if isinstance(
        error,
        InvalidTransition
        | ConcurrentWrite
        | EngineVersionMismatch
        | NothingToVerify
        | RunBusy
        | ExperimentBusy,
    ):
        return 409
    if type(error).__name__ == "ImportConflict":
        return 409
    return 422


def _field_of(error: TwinLedgerError) -> str | None:
    name = getattr(error, "field", None)
    if name is not None:
        return str(name)
    text = str(error)
    head, sep, _ = text.partition(":")
    return head if sep and head.replace("_", "").replace(".", "").isalnum() else None


def _loc(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(part) for part in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts) or "body"


def _error_field(item: Mapping[str, Any]) -> str:
    """The field a validation error is about. A refusal of the whole input's tree (a control
    character deep in an experiment spec: inputs.py ``check_tree``) is located at the model, and
    carries the path inside it: the field is that path, as the CLI names it (``validate``)."""
    field = _loc(item.get("loc", ()))
    path = (item.get("ctx") or {}).get("path")
    if item.get("type") == "unsafe_input" and isinstance(path, str) and path:
        return path if field == "body" else f"{field}.{path}"
    return field


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(TwinLedgerError)
    async def ledger_error(request: Request, error: TwinLedgerError) -> JSONResponse:
        return problem(_status(error), str(error), _field_of(error))

    @app.exception_handler(RequestValidationError)
    async def request_error(request: Request, error: RequestValidationError) -> JSONResponse:
        # Only loc, msg and type: an error's input or context may hold what JSON cannot encode.
        errors = [
            {
                "field": _error_field(item),
                "message": str(item.get("msg", "")),
                "type": str(item.get("type", "")),
            }
            for item in error.errors()
        ]
        first = errors[0] if errors else {"field": "body", "message": "is not valid"}
        return problem(422, f"{first['field']}: {first['message']}", first["field"], errors=errors)

    @app.exception_handler(StoreError)
    async def store_error(request: Request, error: StoreError) -> JSONResponse:
        # Not the request's fault; the message names what (an unreadable stream, say).
        log.error("store error on %s %s: %s", request.method, request.url.path, error)
        return problem(503 if isinstance(error, RunInterrupted) else 500, str(error), None)

    @app.exception_handler(Busy)
    async def busy(request: Request, error: Busy) -> JSONResponse:
        return problem(503, "the server is busy; try again", None)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=error)
        if isinstance(error, TRANSIENT):
            return problem(503, "the database is unavailable; try again", None)
        return problem(500, "internal error (logged by the server)", None)


# --- the request guard ------------------------------------------------------------------------


def _refusal(value: Any) -> tuple[str, str] | None:
    """(field, message) if a decoded JSON body nests too deep or holds a NUL character.

    NUL is refused anywhere (PostgreSQL cannot store it in text or jsonb, so a NUL that slipped
    past a field's own rules would stop a projection); other control characters are for each
    field's rules (infrastructure/inputs.py) to judge.
    """
    stack: list[tuple[Any, int, str]] = [(value, 1, "")]
    while stack:
        item, depth, path = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return "body", f"nests deeper than {MAX_JSON_DEPTH} levels"
        if isinstance(item, str) and "\x00" in item:
            return path or "body", "must not contain NUL characters"
        if isinstance(item, dict):
            for key, child in item.items():
                name = f"{path}.{key}" if path else str(key)
                if "\x00" in key:
                    return path or "body", "keys must not contain NUL characters"
                stack.append((child, depth + 1, name))
        elif isinstance(item, list):
            stack.extend(
                (child, depth + 1, f"{path}.{i}" if path else str(i))
                for i, child in enumerate(item)
            )
    return None


def _has_control(text: str) -> bool:
    return any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in text)


class Guard:
    """Checks every request before a route sees it (pure ASGI, so nothing is read twice).

    Writes (any method but GET/HEAD/OPTIONS) under /api: refused on a read-only server (403),
    and, when a token is configured, without ``Authorization: Bearer TOKEN`` (401). Bodies
    larger than MAX_BODY_BYTES: 413. A body that is not strict JSON (NaN, Infinity, a lone
    surrogate, a number out of range) or nests deeper than MAX_JSON_DEPTH: 422 naming
    ``body``; a NUL character in any string: 422 naming its field. Query strings over
    MAX_QUERY_BYTES, not UTF-8, or with control characters: 422 naming the parameter.
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._check_head(scope)
        if refusal is None and scope["method"] not in READS:
            body, refusal = await self._read_body(scope, receive)
            if refusal is None:
                receive = _replay(body)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _check_head(self, scope: Scope) -> JSONResponse | None:
        raw = scope.get("query_string", b"")
        if len(raw) > MAX_QUERY_BYTES:
            return problem(422, f"query: longer than {MAX_QUERY_BYTES} bytes", "query")
        try:
            pairs = parse_qsl(raw.decode("ascii"), keep_blank_values=True, errors="strict")
        except (UnicodeDecodeError, ValueError):
            return problem(422, "query: is not valid UTF-8 percent-encoding", "query")
        for key, value in pairs:
            if _has_control(key) or _has_control(value):
                name = key if not _has_control(key) else "query"
                return problem(422, f"{name}: must not contain control characters", name)
        path: str = scope.get("path", "")
        if scope["method"] in READS or not path.startswith("/api/"):
            return None
        if self.settings.read_only:
            return problem(403, "this server is read-only (twinledger serve --read-only)", None)
        token = self.settings.token
        if token:
            headers = dict(scope.get("headers", []))
            given = headers.get(b"authorization", b"").decode("latin-1")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                response = problem(401, "writes need Authorization: Bearer <token>", None)
                response.headers["WWW-Authenticate"] = "Bearer"
                return response
        return None

    async def _read_body(self, scope: Scope, receive: Receive) -> tuple[bytes, JSONResponse | None]:
        too_large = problem(413, f"body: larger than {MAX_BODY_BYTES} bytes", "body")
        headers = dict(scope.get("headers", []))
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
            return b"", too_large
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                return b"", too_large
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body.strip():
            try:
                body.decode("utf-8")  # msgspec passes invalid UTF-8 in strings through
                value = msgspec.json.decode(body)
            except UnicodeDecodeError:
                return body, problem(422, "body: is not valid UTF-8", "body")
            except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as error:
                return body, problem(422, f"body: is not valid JSON ({error})", "body")
            refused = _refusal(value)
            if refused is not None:
                name, text = refused
                return body, problem(422, f"{name}: {text}", name)
        return body, None


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


# --- the application --------------------------------------------------------------------------


def create_app(settings: Settings | None = None, *, executor: Executor | None = None) -> FastAPI:
    """The server's ASGI application (``twinledger serve`` runs it with uvicorn)."""
    settings = settings or Settings()
    database = resolve_database(settings.url)
    if not database.is_postgres and "mode=memory" in database.sqlite_path:
        raise ValidationError("db", "the server needs a database file or PostgreSQL, not :memory:")
    url = database.url if database.is_postgres else f"sqlite:///{database.sqlite_path}"

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with Ledger.open(url, warn=log.warning) as ledger:
            ledger.catch_up()  # the log and the read tables exist, current, before any request
        app.state.pool = LedgerPool(url, settings.pool_size)
        app.state.executor = executor or ServerExecutor(
            url, workers=settings.workers, scheduler=settings.scheduler
        )
        watch = None
        if settings.resume_queued and not settings.read_only:
            resume(database, app.state.executor)
            watch = OrphanWatch(database, app.state.executor, every=settings.resume_every)
        app.state.watch = watch
        app.state.follower = LogFollower(database, poll_seconds=settings.poll_seconds)
        app.state.follower.start()
        if watch is not None:
            watch.start()
        try:
            yield
        finally:
            if watch is not None:
                watch.stop()
            app.state.follower.stop()
            app.state.executor.shutdown()
            app.state.pool.close()

    from infrastructure.http.api import router as api_router
    from infrastructure.http.apidocs import router as docs_router
    from infrastructure.http.dashboard import router as dashboard_router

    app = FastAPI(
        title="TwinLedger",
        version="1",
        summary="An event-sourced ledger for digital-twin simulations (docs/http.md).",
        openapi_url=f"{API}/openapi.json",
        docs_url=None,  # apidocs.py: the same page, with Swagger UI served here, not by a CDN
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(api_router, prefix=API)
    app.include_router(docs_router, prefix=API)
    app.include_router(dashboard_router)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(Guard, settings=settings)
    return app
