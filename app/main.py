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
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from fastapi import FastAPI, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import exc as sa_exc
from starlette.concurrency import run_in_threadpool

from movierec import __version__
from movierec.db.engine import make_engine, session_factory
from movierec.settings import Settings, get_settings

from .metrics import Metrics
from .middleware import BodySizeLimitMiddleware, MetricsMiddleware
from .model_registry import ModelRegistry
from .popularity import Popularity
from .routers import admin, movies, ops, predict, ratings, recommend
from .schemas import BODY_ERRORS

log = logging.getLogger("app")

STATIC_DIR = Path(__file__).parent / "static"
#: Seconds between popularity refreshes (one aggregate query over the ratings).
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
    registry = ModelRegistry(settings.model_store, sessions, app.state.metrics)
    popularity = Popularity(sessions)
    app.state.engine, app.state.sessions = engine, sessions
    app.state.registry, app.state.popularity = registry, popularity
    await run_in_threadpool(_startup, registry, popularity)

    def model_tick() -> None:
        registry.poll()
        registry.refresh_stale()

    tasks = [asyncio.create_task(_every(POPULARITY_REFRESH_S, "popularity", popularity.refresh))]
    if settings.reload_interval > 0:
        tasks.append(asyncio.create_task(_every(settings.reload_interval, "model reload", model_tick)))
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        engine.dispose()


def _json_error(status_code: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status_code)


def _finite(value: object) -> object:
    """``value`` with NaN and infinities replaced by their names, so it can be sent as JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def _install_error_handlers(app: FastAPI) -> None:
    """Database failures -> 503, constraint conflicts -> 409, anything else -> 500; never a trace."""

    async def integrity(_: Request, exc: Exception) -> JSONResponse:
        log.warning("integrity error: %s", exc)
        return _json_error(status.HTTP_409_CONFLICT, "the request conflicts with stored data (it was not stored)")

    async def database_down(_: Request, exc: Exception) -> JSONResponse:
        log.error("database error: %s", exc)
        return _json_error(status.HTTP_503_SERVICE_UNAVAILABLE, "database unavailable, try again later")

    async def invalid_request(_: Request, exc: Exception) -> JSONResponse:
        # FastAPI's own handler echoes the offending input, and JSON has no NaN or Infinity: a body
        # such as {"rating": NaN} (which Python's JSON parser accepts) made rendering the 422 fail.
        errors = jsonable_encoder(exc.errors())  # type: ignore[attr-defined]
        return JSONResponse({"detail": _finite(errors)}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)

    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return _json_error(status.HTTP_500_INTERNAL_SERVER_ERROR, "internal server error")

    handlers: list[tuple[type[Exception], Callable[[Request, Exception], Awaitable[JSONResponse]]]] = [
        (RequestValidationError, invalid_request),
        (sa_exc.IntegrityError, integrity),
        (sa_exc.OperationalError, database_down),
        (sa_exc.InterfaceError, database_down),
        (sa_exc.DBAPIError, database_down),
        (sa_exc.TimeoutError, database_down),  # connection pool exhausted
        (Exception, unexpected),
    ]
    for exc_class, handler in handlers:
        app.add_exception_handler(exc_class, handler)


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
    )
    app.state.settings = settings
    app.state.metrics = Metrics()
    for module in (predict, recommend, ratings, movies, ops, admin):
        # The routes themselves, as include_router did before FastAPI 0.16x: it now dispatches
        # each request through a wrapper per included router, ~8 % of /predict's throughput.
        # An APIRouter's prefix, tags, dependencies and responses (BODY_ERRORS) are already on
        # each of its routes.
        app.router.routes.extend(module.router.routes)
    _install_error_handlers(app)

    # Last added is outermost: metrics see every response (413s and CORS preflights included),
    # CORS headers go on error responses too, the body limit sits closest to the app.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Content-Type", "X-API-Key"],
        )
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)

    # The front end, after every API route so it never shadows one.
    if STATIC_DIR.is_dir():
        app.mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="static")
    return app
