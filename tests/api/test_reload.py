"""Live model reload: new versions are picked up, broken ones refused without a retry loop."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from movierec.store import WEIGHTS_FILE

from .conftest import MODEL_MOVIES, MODEL_USERS
from .helpers import publish_dot


def _wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _metric(client: TestClient, line_start: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_poll_picks_up_a_new_version(seeded: Engine, store: Path, make_client: Callable[..., TestClient]) -> None:
    publish_dot(store, MODEL_USERS, MODEL_MOVIES, seed=1)
    client = make_client(reload_interval=0.05)
    before = client.get("/predict", params={"user_id": 2, "movie_id": 3}).json()
    assert before["model_version"] == 1
    # v2 knows a new user and a new movie (28 is in the database).
    publish_dot(store, [*MODEL_USERS, 77], [*MODEL_MOVIES, 28], seed=2, pngs=["roc.png"])
    assert _wait_for(lambda: client.get("/model").json()["version"] == 2)
    after = client.get("/predict", params={"user_id": 2, "movie_id": 3}).json()
    assert after["model_version"] == 2 and after["rating"] != before["rating"]
    assert client.get("/predict", params={"user_id": 1, "movie_id": 28}).status_code == 200
    assert client.get("/model").json()["files"] == ["roc.png"]
    assert _metric(client, "movierec_model_version") == 2


def test_corrupt_version_is_refused_once_and_old_one_keeps_serving(
        seeded: Engine, store: Path, tmp_path: Path, make_client: Callable[..., TestClient]) -> None:
    publish_dot(store, MODEL_USERS, MODEL_MOVIES, seed=1)
    client = make_client(reload_interval=0.05)
    # Build a version with a truncated weights file on the side, then move it in atomically (as a
    # broken trainer or a bad copy would leave it) and point CURRENT at it.
    side = tmp_path / "side"
    publish_dot(side, MODEL_USERS, MODEL_MOVIES, seed=2)
    publish_dot(side, MODEL_USERS, MODEL_MOVIES, seed=2)
    weights = side / "2" / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:100])
    os.rename(side / "2", store / "2")
    (store / ".tmp-current").write_text("2\n")
    os.replace(store / ".tmp-current", store / "CURRENT")
    assert _wait_for(lambda: _metric(client, 'movierec_model_reloads_total{result="failure"}') >= 1)
    time.sleep(0.5)  # ten more poll ticks: the same broken files are not loaded again
    assert _metric(client, 'movierec_model_reloads_total{result="failure"}') == 1
    assert client.get("/model").json()["version"] == 1
    assert client.get("/predict", params={"user_id": 2, "movie_id": 3}).json()["model_version"] == 1
    assert client.get("/ready").status_code == 200
    manual = client.post("/admin/reload").json()
    assert manual["changed"] is False and manual["version"] == 1 and "sha256" in manual["error"]
    # A good version published later is taken.
    publish_dot(store, MODEL_USERS, MODEL_MOVIES, seed=3)
    assert _wait_for(lambda: client.get("/model").json()["version"] == 3)


def test_admin_reload_switches_without_polling(seeded: Engine, store: Path,
                                               make_client: Callable[..., TestClient]) -> None:
    publish_dot(store, MODEL_USERS, MODEL_MOVIES, seed=1)
    client = make_client(reload_interval=0)
    publish_dot(store, MODEL_USERS, MODEL_MOVIES, seed=2)
    assert client.get("/model").json()["version"] == 1
    result = client.post("/admin/reload").json()
    assert result == {"version": 2, "previous_version": 1, "changed": True, "error": None}
    assert client.get("/model").json()["version"] == 2


def test_first_model_published_after_start(seeded: Engine, store: Path,
                                           make_client: Callable[..., TestClient]) -> None:
    client = make_client(reload_interval=0.05)
    assert client.get("/ready").status_code == 503
    publish_dot(store, MODEL_USERS, MODEL_MOVIES)
    assert _wait_for(lambda: client.get("/ready").status_code == 200)
