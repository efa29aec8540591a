"""Fixtures of the API tests: a seeded database (SQLite and PostgreSQL), a model store, a client."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from app.main import create_app
from movierec.settings import Settings

from .helpers import publish_dot, seed_movies, seed_ratings

#: Catalogue of the standard fixture: movies 1..30; the model knows users 1..20 and movies 1..25,
#: so movies 26..30 are "in the database, not in the model".
MOVIES = range(1, 31)
MODEL_USERS = range(1, 21)
MODEL_MOVIES = range(1, 26)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "models"


@pytest.fixture
def seeded(engine: Engine) -> Engine:
    """Movies 1..30 and, for users 1..20, ratings of five movies each, all before the snapshot (t <= 1000)."""
    seed_movies(engine, MOVIES)
    seed_ratings(engine, [(u, (u + j) % 25 + 1, float(1 + (u + j) % 5), 500 + j) for u in MODEL_USERS
                          for j in range(5)])
    return engine


@pytest.fixture
def make_client(db_url: str, store: Path) -> Iterator[Callable[..., TestClient]]:
    """Factory of started TestClients on ``db_url`` and ``store``; settings overridable by keyword."""
    clients: list[TestClient] = []

    def factory(**overrides: Any) -> TestClient:
        settings = Settings(**{"database_url": db_url, "model_store": store, "reload_interval": 0, **overrides})
        client = TestClient(create_app(settings))
        client.__enter__()
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(seeded: Engine, store: Path, make_client: Callable[..., TestClient]) -> TestClient:
    """A started client with the seeded database and one published model (version 1)."""
    publish_dot(store, MODEL_USERS, MODEL_MOVIES, pngs=["loss.png"])
    return make_client()
