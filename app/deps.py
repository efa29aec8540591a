"""FastAPI dependencies: settings, database sessions, the model registry and store, popularity, metrics.

Everything lives on ``app.state`` (set up by :func:`app.main.create_app` and its lifespan); the
dependencies only hand it out, so tests configure an app by passing their own ``Settings`` to
``create_app``, and routers never read ``app.state`` themselves. Dependencies that do no I/O are
``async def`` so FastAPI does not hop to the thread pool for them. The one hot endpoint that
skips declared dependencies (GET /predict, see :mod:`app.routers.predict`) calls these functions
directly instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from sqlalchemy.orm import Session, sessionmaker

from movierec.settings import Settings
from movierec.store import ModelStore

from .impressions import ImpressionRecorder
from .metrics import Metrics
from .model_registry import ModelRegistry, ServingState
from .popularity import Popularity


async def get_app_settings(request: Request) -> Settings:
    """The app's settings object."""
    return request.app.state.settings


async def get_registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


async def get_store(request: Request) -> ModelStore:
    """The model store the registry loads from (report files of a version)."""
    return request.app.state.registry.store


async def get_popularity(request: Request) -> Popularity:
    return request.app.state.popularity


async def get_metrics(request: Request) -> Metrics:
    """The app's Prometheus metrics."""
    return request.app.state.metrics


async def get_sessions(request: Request) -> sessionmaker[Session]:
    """The session factory, for code that opens sessions only when it needs one (often never)."""
    return request.app.state.sessions


async def get_state(request: Request) -> ServingState | None:
    """The serving state at the start of the request (None when no model is loaded)."""
    return request.app.state.registry.state


async def get_user_serving(request: Request) -> tuple[ServingState | None, str]:
    """The serving state for the query's ``user_id`` and its role (``current`` or ``candidate``).

    The id is read as the route will validate it; an invalid one gets CURRENT here and its 422
    from the route's own parameter.
    """
    raw = request.query_params.get("user_id", "")
    user_id = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 10 else None
    return request.app.state.registry.serving(user_id)


async def get_recorder(request: Request) -> ImpressionRecorder:
    """The impression recorder (records nothing when MOVIEREC_RECORD_IMPRESSIONS is false)."""
    return request.app.state.recorder


def require_state_now(request: Request) -> ServingState:
    """The serving state; 503 when no model is loaded (for hot endpoints that skip the dependency)."""
    state = request.app.state.registry.state
    if state is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "no model is loaded yet")
    return state


async def require_state(request: Request) -> ServingState:
    """The serving state; 503 when no model is loaded."""
    return require_state_now(request)


def get_session(request: Request) -> Iterator[Session]:
    """A session from the app's sessionmaker (pooled connection), closed after the response."""
    with request.app.state.sessions() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
StoreDep = Annotated[ModelStore, Depends(get_store)]
PopularityDep = Annotated[Popularity, Depends(get_popularity)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
SessionsDep = Annotated[sessionmaker[Session], Depends(get_sessions)]
StateDep = Annotated[ServingState | None, Depends(get_state)]
RequiredStateDep = Annotated[ServingState, Depends(require_state)]
SessionDep = Annotated[Session, Depends(get_session)]
UserServingDep = Annotated[tuple[ServingState | None, str], Depends(get_user_serving)]
RecorderDep = Annotated[ImpressionRecorder, Depends(get_recorder)]
