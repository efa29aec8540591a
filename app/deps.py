"""FastAPI dependencies: settings, database sessions, the model registry, popularity.

Everything lives on ``app.state`` (set up by the lifespan in :mod:`app.main`); the dependencies
only hand it out, so tests configure an app by passing their own ``Settings`` to ``create_app``.
Dependencies that do no I/O are ``async def`` so FastAPI does not hop to the thread pool for them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from sqlalchemy.orm import Session

from movierec.settings import Settings

from .model_registry import ModelRegistry, ServingState
from .popularity import Popularity


async def get_app_settings(request: Request) -> Settings:
    """The app's settings object."""
    return request.app.state.settings


async def get_registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


async def get_popularity(request: Request) -> Popularity:
    return request.app.state.popularity


async def get_state(request: Request) -> ServingState | None:
    """The serving state at the start of the request (None when no model is loaded)."""
    return request.app.state.registry.state


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
PopularityDep = Annotated[Popularity, Depends(get_popularity)]
StateDep = Annotated[ServingState | None, Depends(get_state)]
RequiredStateDep = Annotated[ServingState, Depends(require_state)]
SessionDep = Annotated[Session, Depends(get_session)]
