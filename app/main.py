"""The FastAPI application: ``create_app(settings)`` wires routers, middleware and the lifespan.

Start-up (lifespan): database engine and session factory, the model registry (first model loaded
if the store has one), the popularity cache, and two background tasks -- the model-store poll
(every ``reload_interval`` seconds) and the popularity refresh. Shut-down cancels them and
closes the connection pool. A database or store that is not there at start-up does not stop the
service: ``/ready`` answers 503 with the reason until both are usable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import swagger_ui_bundle
from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from sqlalchemy import exc as sa_exc
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from movierec import __version__
from movierec.db.engine import make_engine, session_factory
from movierec.settings import Settings, get_settings

from .impressions import ImpressionRecorder
from .metrics import Metrics
from .middleware import BodySizeLimitMiddleware, MetricsMiddleware, SecurityHeadersMiddleware, json_value_budget
from .model_registry import ModelRegistry
from .popularity import Popularity
from .routers import admin, movies, online, ops, predict, ratings, recommend
from .schemas import BODY_ERRORS
from .user_reads import UserRatingsReader

log = logging.getLogger("app")

STATIC_DIR = Path(__file__).parent / "static"
#: Seconds between popularity checks (a fingerprint of the ratings; the table is rebuilt when it moved).
POPULARITY_REFRESH_S = 60.0
#: Connections per process: enough for the thread pool (40 by default) so requests do not queue
#: on the pool; PostgreSQL's default max_connections (100) allows two such workers.
POOL_SIZE, POOL_OVERFLOW, POOL_TIMEOUT_S = 10, 30, 10


async def _every(seconds: float, name: str, job: Callable[[], object]) -> None:
    """Run ``job`` in the thread pool every ``seconds``; errors are logged, never fatal."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await run_in_threadpool(job)
        except Exception:  # noqa: BLE001 - a background job must outlive a failed run
            log.exception("background job %s failed", name)


def _startup(registry: ModelRegistry, popularity: Popularity) -> None:
    """First model load and popularity computation; failures are logged and retried later."""
    registry.reload()
    registry.poll_candidate()
    try:
        popularity.refresh()
    except Exception as exc:  # noqa: BLE001 - database down at start-up: /ready reports it
        log.error("popularity not computed at start-up: %s", exc)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    logging.getLogger("app").setLevel(settings.log_level.upper())
    engine = make_engine(settings.database_url, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW,
                         pool_timeout=POOL_TIMEOUT_S)
    sessions = session_factory(engine)
    registry = ModelRegistry(settings.model_store, sessions, app.state.metrics, ann_min_movies=settings.ann_min_movies)
    popularity = Popularity(sessions)
    app.state.engine, app.state.sessions = engine, sessions
    app.state.registry, app.state.popularity = registry, popularity
    app.state.user_reads = UserRatingsReader(engine)
    recorder = ImpressionRecorder(
        sessions, app.state.metrics, enabled=settings.record_impressions, queue_size=settings.impressions_queue_size,
        flush_s=settings.impressions_flush_ms / 1000, batch_rows=settings.impressions_batch_rows,
        retention_s=settings.impressions_retention_days * 86400)
    app.state.recorder = recorder
    await run_in_threadpool(_startup, registry, popularity)

    def model_tick() -> None:
        registry.poll()
        registry.refresh_stale()

    tasks = [asyncio.create_task(_every(POPULARITY_REFRESH_S, "popularity", popularity.refresh_if_changed))]
    if settings.reload_interval > 0:
        tasks.append(asyncio.create_task(_every(settings.reload_interval, "model reload", model_tick)))
    recorder.start()
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await run_in_threadpool(recorder.stop)  # writes what is waiting
        app.state.user_reads.close()
        engine.dispose()


def _json_error(status_code: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": safe_text(detail)}, status_code=status_code, headers=headers)


#: Validation errors listed in one 422 (the rest are counted), and how much of an input is echoed.
MAX_ERRORS_SHOWN = 20
MAX_ECHO_CHARS = 200
_MAX_ECHO_ITEMS = 8
_SURROGATES = re.compile("[\ud800-\udfff]")


def safe_text(text: str, limit: int | None = None) -> str:
    """``text`` cut to ``limit`` characters, with lone UTF-16 surrogates replaced by U+FFFD.

    JSON escapes such as ``"\\udfff"`` decode to lone surrogates, which UTF-8 cannot encode:
    echoed back in a response, they made rendering it fail (a 500).
    """
    if limit is not None and len(text) > limit:
        text = text[:limit] + "\u2026"
    return _SURROGATES.sub("\ufffd", text)


def _echo(value: object, depth: int = 0) -> object:
    """A bounded, JSON-safe rendering of a client's input for an error message."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if abs(value) < 2**63 else safe_text(str(value), 40)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)  # JSON has no NaN or Infinity
    if isinstance(value, str):
        return safe_text(value, MAX_ECHO_CHARS)
    if isinstance(value, (bytes, bytearray)):
        return safe_text(bytes(value[:MAX_ECHO_CHARS]).decode("utf-8", "replace"), MAX_ECHO_CHARS)
    if isinstance(value, dict) and depth < 2 and len(value) <= _MAX_ECHO_ITEMS:
        return {safe_text(str(key), 64): _echo(item, depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple)) and depth < 2 and len(value) <= _MAX_ECHO_ITEMS:
        return [_echo(item, depth + 1) for item in value]
    if isinstance(value, dict):
        return f"<object of {len(value)} fields>"
    if isinstance(value, (list, tuple)):
        return f"<array of {len(value)} items>"
    return safe_text(str(value), MAX_ECHO_CHARS)  # e.g. the exception in a ctx


def _error(error: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": safe_text(str(error.get("type", "value_error")), 64),
        "loc": [part if isinstance(part, int) else safe_text(str(part), 64) for part in error.get("loc", ())],
        "msg": safe_text(str(error.get("msg", "")), 500),
    }
    if "input" in error:
        out["input"] = _echo(error["input"])
    ctx = error.get("ctx")
    if isinstance(ctx, dict):
        out["ctx"] = {safe_text(str(key), 64): _echo(value, 2) for key, value in list(ctx.items())[:_MAX_ECHO_ITEMS]}
    return out


def validation_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first MAX_ERRORS_SHOWN errors, rendered safely, plus one entry counting the rest.

    Only the shown errors are rendered: the work and the response stay small however many errors
    the input produced (FastAPI's own handler echoed every one of them in full).
    """
    shown = [_error(error) for error in errors[:MAX_ERRORS_SHOWN]]
    rest = len(errors) - len(shown)
    if rest > 0:
        loc = shown[-1]["loc"][:1] if shown and shown[-1]["loc"] else ["body"]
        shown.append({"type": "too_many_errors", "loc": loc,
                      "msg": f"{rest} more error(s) not shown (only the first {MAX_ERRORS_SHOWN} are listed)",
                      "ctx": {"not_shown": rest}})
    return shown


def _allowed_methods(request: Request) -> str:
    """Every method some route of this path allows (for a 405's ``Allow`` header)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "\x00"})  # a method no route has
        if match is not Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return ", ".join(sorted(methods))


def _install_error_handlers(app: FastAPI) -> None:
    """Database failures -> 503, constraint conflicts -> 409, anything else -> 500; never a trace."""

    async def integrity(_: Request, exc: Exception) -> JSONResponse:
        log.warning("integrity error: %s", exc)
        return _json_error(status.HTTP_409_CONFLICT, "the request conflicts with stored data (it was not stored)")

    async def database_down(_: Request, exc: Exception) -> JSONResponse:
        log.error("database error: %s", exc)
        return _json_error(status.HTTP_503_SERVICE_UNAVAILABLE, "database unavailable, try again later")

    async def invalid_request(_: Request, exc: Exception) -> JSONResponse:
        # FastAPI's own handler echoes every error with its whole input: a 1 MB body of [1,1,...]
        # became a 70 MB response after seconds of encoding on the event loop; and JSON has no
        # NaN, Infinity or lone surrogates, which made rendering some 422s fail.
        errors = validation_errors(list(exc.errors()))  # type: ignore[attr-defined]
        return JSONResponse({"detail": errors}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        headers = exc.headers
        if exc.status_code == status.HTTP_405_METHOD_NOT_ALLOWED:
            # Starlette names the methods of the first route with this path only: GET /predict's,
            # though POST /predict exists too.
            headers = {**(headers or {}), "Allow": _allowed_methods(request)}
        if exc.status_code < 200 or exc.status_code in (204, 304):  # no body allowed
            return Response(status_code=exc.status_code, headers=headers)
        detail = exc.detail
        if isinstance(detail, list):  # validation-shaped errors raised before a route (app.middleware)
            return JSONResponse({"detail": validation_errors(detail)}, status_code=exc.status_code, headers=headers)
        return _json_error(exc.status_code, str(detail), headers)

    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return _json_error(status.HTTP_500_INTERNAL_SERVER_ERROR, "internal server error")

    handlers: list[tuple[type[Exception], Callable[[Request, Exception], Awaitable[JSONResponse]]]] = [
        (RequestValidationError, invalid_request),
        (StarletteHTTPException, http_error),
        (sa_exc.IntegrityError, integrity),
        (sa_exc.OperationalError, database_down),
        (sa_exc.InterfaceError, database_down),
        (sa_exc.DBAPIError, database_down),
        (sa_exc.TimeoutError, database_down),  # connection pool exhausted
        (Exception, unexpected),
    ]
    for exc_class, handler in handlers:
        app.add_exception_handler(exc_class, handler)


#: Swagger UI's files, from the swagger-ui-bundle package: /docs loads nothing from a CDN.
SWAGGER_UI_DIR = Path(swagger_ui_bundle.swagger_ui_path)
#: The /docs page: no inline script (the page's CSP forbids it); static/js/docs.js starts Swagger UI.
DOCS_HTML = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>movierec API docs</title>
  <link rel="icon" href="favicon.svg" type="image/svg+xml">
  <link rel="stylesheet" href="docs/assets/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="docs/assets/swagger-ui-bundle.js"></script>
  <script src="js/docs.js"></script>
</body>
</html>
"""


def _add_docs(app: FastAPI) -> None:
    """/docs from the vendored Swagger UI (ReDoc, which FastAPI loads from a CDN, is not served)."""

    async def docs() -> HTMLResponse:
        return HTMLResponse(DOCS_HTML)

    app.add_api_route("/docs", docs, methods=["GET", "HEAD"], include_in_schema=False)
    app.mount("/docs/assets", StaticFiles(directory=SWAGGER_UI_DIR), name="swagger-ui")


def _allow_head(app: FastAPI) -> None:
    """HEAD wherever GET is allowed (RFC 9110), without a HEAD operation per path in the schema."""
    for route in app.router.routes:
        if isinstance(route, APIRoute) and "GET" in route.methods:
            route.methods.add("HEAD")
    build_schema = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            with warnings.catch_warnings():  # HEAD shares its GET's operation id until removed here
                warnings.simplefilter("ignore")
                schema = build_schema()
            for operations in schema.get("paths", {}).values():
                operations.pop("head", None)
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application for ``settings`` (default: from the environment)."""
    settings = settings or get_settings()
    app = FastAPI(
        title="movierec",
        version=__version__,
        summary="Movie recommendations from latent factors.",
        description=(
            "Predicted ratings, personalised recommendations (with instant fold-in of new users' "
            "ratings), similar and popular movies, and rating storage. POST and DELETE need the "
            "`X-API-Key` header when the server has an API key."
        ),
        lifespan=lifespan,
        responses=BODY_ERRORS,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics = Metrics()
    for module in (predict, recommend, ratings, movies, ops, admin, online):
        # The routes themselves, as include_router did before FastAPI 0.16x: it now dispatches
        # each request through a wrapper per included router, ~8 % of /predict's throughput.
        # An APIRouter's prefix, tags, dependencies and responses (BODY_ERRORS) are already on
        # each of its routes.
        app.router.routes.extend(module.router.routes)
    _allow_head(app)
    _add_docs(app)
    _install_error_handlers(app)

    # Last added is outermost: metrics see every response (413s and CORS preflights included),
    # CORS headers go on error responses too, the body limit sits closest to the app.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes,
                       max_json_values=json_value_budget(settings.max_batch))
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Content-Type", "X-API-Key"],
        )
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)

    # The front end, as FastAPI's low-priority frontend routes: an API path never reaches it, so
    # PUT /ratings is the API's 405 (Allow: POST), not the file server's.
    if STATIC_DIR.is_dir():
        app.frontend("/", directory=STATIC_DIR, fallback=None)
    return app
