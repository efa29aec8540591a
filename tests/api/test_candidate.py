"""A candidate version serves a hashed share of users beside CURRENT; answers say which served them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from movierec.store import CANDIDATE_FILE, WEIGHTS_FILE, ModelStore

from .conftest import MODEL_MOVIES, MODEL_USERS
from .helpers import publish_dot
from .test_impressions import MANUAL


def _served(client: TestClient) -> dict[int, tuple[int, str]]:
    out = {}
    for user in MODEL_USERS:
        response = client.get("/recommend", params={"user_id": user})
        body = response.json()
        assert response.headers["X-Model-Version"] == str(body["model_version"])
        assert response.headers["X-Model-Role"] == body["served_by"]
        out[user] = (body["model_version"], body["served_by"])
    return out


def _two_versions(store: Path) -> ModelStore:
    publish_dot(store, MODEL_USERS, MODEL_MOVIES, seed=1)
    publish_dot(store, MODEL_USERS, MODEL_MOVIES, seed=2)
    models = ModelStore(store)
    models.set_current(1)
    return models


def test_candidate_serves_its_hashed_share_and_promote_and_clear(
        seeded: Engine, store: Path, make_client: Callable[..., TestClient]) -> None:
    models = _two_versions(store)
    candidate = models.set_candidate(2, 0.5, salt="s")
    client = make_client(**MANUAL)
    served = _served(client)
    expected = {u: (2, "candidate") if candidate.serves(u) else (1, "current") for u in MODEL_USERS}
    assert served == expected and {v for v, _ in served.values()} == {1, 2}
    assert _served(client) == served  # stable per user
    assert client.get("/model/online").json()["candidate"] == {"version": 2, "share": 0.5}
    metrics = client.get("/metrics").text
    assert "movierec_candidate_version 2.0" in metrics and "movierec_candidate_share 0.5" in metrics

    models.promote()
    client.post("/admin/reload")
    assert set(_served(client).values()) == {(2, "current")}

    models.set_candidate(1, 1.0)
    client.post("/admin/reload")
    assert set(_served(client).values()) == {(1, "candidate")}
    models.clear_candidate()
    client.post("/admin/reload")
    assert set(_served(client).values()) == {(2, "current")}


def test_online_report_compares_current_and_candidate(
        seeded: Engine, store: Path, make_client: Callable[..., TestClient]) -> None:
    models = _two_versions(store)
    models.set_candidate(2, 0.5, salt="s")
    client = make_client(**MANUAL)
    _served(client)
    client.app.state.recorder.flush()  # type: ignore[attr-defined]
    report = client.get("/model/online").json()
    assert {v["model_version"] for v in report["versions"]} == {1, 2}
    assert sum(v["impressions"] for v in report["versions"]) == len(MODEL_USERS)
    assert (report["comparison"]["a"], report["comparison"]["b"]) == (1, 2)
    assert report["comparison"]["hit_rate"]["significant"] is False


def test_a_damaged_candidate_keeps_the_previous_candidate(
        seeded: Engine, store: Path, make_client: Callable[..., TestClient]) -> None:
    models = _two_versions(store)
    publish_dot(store, MODEL_USERS, MODEL_MOVIES, seed=3)
    models.set_current(1)
    models.set_candidate(2, 1.0)
    client = make_client(**MANUAL)
    assert set(_served(client).values()) == {(2, "candidate")}
    weights = store / "3" / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:100])
    # Point at the damaged version behind the store's checks, as a bad copy would.
    (store / CANDIDATE_FILE).write_text('{"version": 3, "share": 1.0, "salt": "x"}\n')
    client.post("/admin/reload")
    assert set(_served(client).values()) == {(2, "candidate")}
    online = client.get("/model/online").json()
    assert "candidate version 3 not loaded" in online["candidate_error"]


def test_the_hot_reload_follows_the_candidate_pointer(
        seeded: Engine, store: Path, make_client: Callable[..., TestClient]) -> None:
    import time

    models = _two_versions(store)
    client = make_client(**MANUAL, reload_interval=0.05)
    assert set(_served(client).values()) == {(1, "current")}
    models.set_candidate(2, 1.0)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and client.get("/recommend", params={"user_id": 1}).json()["model_version"] != 2:
        time.sleep(0.05)
    assert set(_served(client).values()) == {(2, "candidate")}
