"""A database that is down: 503 with a clear message, never a stack trace; /health stays up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from movierec.settings import Settings

from .helpers import publish_dot


@pytest.fixture(params=["sqlite", "postgres"])
def down_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        directory = tmp_path / "not-a-file.db"
        directory.mkdir()
        return f"sqlite:///{directory}"  # a directory: 'unable to open database file'
    return "postgresql+psycopg://postgres@127.0.0.1:1/test"  # nothing listens on port 1


@pytest.fixture
def down_client(down_url: str, tmp_path: Path) -> Iterator[TestClient]:
    publish_dot(tmp_path / "models", range(1, 5), range(1, 5))
    settings = Settings(database_url=down_url, model_store=tmp_path / "models", reload_interval=0)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def test_database_down_is_503(down_client: TestClient) -> None:
    assert down_client.get("/health").status_code == 200
    ready = down_client.get("/ready")
    assert ready.status_code == 503 and ready.json()["database"] is False
    assert any("database unreachable" in r for r in ready.json()["reasons"])
    for method, url, kwargs in [
        ("GET", "/recommend?user_id=1", {}), ("GET", "/popular", {}), ("GET", "/movies", {}),
        ("GET", "/users/1/ratings", {}), ("POST", "/ratings", {"json": {"user_id": 1, "movie_id": 1, "rating": 4}}),
        ("DELETE", "/users/1/ratings/1", {}),
    ]:
        response = down_client.request(method, url, **kwargs)
        assert response.status_code == 503, (url, response.text)
        assert response.json() == {"detail": "database unavailable, try again later"}
        assert "Traceback" not in response.text
