"""GET /recommend?explain=true and the ratings counts of ranked lists, through HTTP on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from app.catalogue import Catalogue
from app.explain import explain_rows
from app.scoring import LoadedModel
from movierec.store import ModelStore

from .conftest import MODEL_MOVIES, MODEL_USERS
from .helpers import manifest_for, random_dot_tensors


def _rated(client: TestClient, user_id: int) -> dict[int, float]:
    body = client.get(f"/users/{user_id}/ratings", params={"limit": 1000}).json()
    rows = body["items"] if isinstance(body, dict) else body
    return {int(r["movie_id"]): float(r["rating"]) for r in rows}


def _expected(store: Path, rated: dict[int, float], movie_ids: list[int]) -> list[list[dict[str, object]]]:
    """The reasons app.explain gives for ``movie_ids`` from the published model itself."""
    model = LoadedModel(ModelStore(store).load())
    catalogue = Catalogue.from_rows([(int(m), f"Movie {m}", None, "") for m in model.movie_ids]).aligned_to(
        model.movie_ids)
    rows, _ = model.movie_rows(np.array(movie_ids))
    reasons = explain_rows(model, catalogue, np.array(list(rated)), np.array(list(rated.values())), rows)
    return reasons  # type: ignore[return-value]


def _check_reasons(items: list[dict[str, object]], rated: dict[int, float]) -> None:
    """Each item: at most 3 reasons, only movies the user rated, with their titles and ratings, largest first."""
    for item in items:
        because = item["because"]
        assert isinstance(because, list) and len(because) <= 3
        weights = [r["weight"] for r in because]
        assert all(w > 0 for w in weights) and weights == sorted(weights, reverse=True)
        for reason in because:
            assert reason["movie_id"] in rated
            assert reason["title"] == f"Movie {reason['movie_id']}"


def test_explain_names_the_trained_users_own_ratings_computed_from_the_model(client: TestClient, store: Path) -> None:
    body = client.get("/recommend", params={"user_id": 3, "n": 10, "explain": "true"}).json()
    assert body["source"] == "model" and len(body["items"]) == 10
    rated = _rated(client, 3)
    _check_reasons(body["items"], rated)
    assert any(item["because"] for item in body["items"])
    expected = _expected(store, rated, [item["movie_id"] for item in body["items"]])
    for item, want in zip(body["items"], expected, strict=True):
        assert [r["movie_id"] for r in item["because"]] == [r["movie_id"] for r in want]
        assert [r["weight"] for r in item["because"]] == [r["weight"] for r in want]


def test_fold_in_users_get_explanations_too(client: TestClient, store: Path) -> None:
    mine = {2: 5.0, 7: 4.5, 11: 1.0, 19: 4.0, 23: 2.0}
    payload = [{"user_id": 5000, "movie_id": m, "rating": r} for m, r in mine.items()]
    assert client.post("/ratings", json=payload).status_code == 201
    body = client.get("/recommend", params={"user_id": 5000, "n": 15, "explain": "true"}).json()
    assert body["source"] == "fold_in" and body["personalized"] is True
    _check_reasons(body["items"], mine)
    assert any(item["because"] for item in body["items"])
    expected = _expected(store, mine, [item["movie_id"] for item in body["items"]])
    assert [[r["movie_id"] for r in item["because"]] for item in body["items"]] == \
        [[r["movie_id"] for r in want] for want in expected]


def test_an_empty_list_explains_nothing(client: TestClient) -> None:
    """A filter that leaves no movie: an empty list, not a failure (found by the API fuzzer)."""
    for params in ({"genre": "NoSuchGenre"}, {"min_year": 9999}):
        body = client.get("/recommend", params={"user_id": 3, "explain": "true", **params})
        assert body.status_code == 200 and body.json()["items"] == []


def test_a_single_rating_is_the_only_possible_reason(client: TestClient) -> None:
    assert client.post("/ratings", json={"user_id": 5001, "movie_id": 4, "rating": 5}).status_code == 201
    items = client.get("/recommend", params={"user_id": 5001, "n": 20, "explain": 1}).json()["items"]
    assert {r["movie_id"] for item in items for r in item["because"]} == {4}


def test_without_explain_there_is_no_because_key_and_popularity_explains_nothing(client: TestClient) -> None:
    plain = client.get("/recommend", params={"user_id": 3}).json()
    assert all("because" not in item for item in plain["items"])
    explained = client.get("/recommend", params={"user_id": 3, "explain": "false"}).json()
    assert explained.pop("request_id") != plain.pop("request_id") and explained == plain
    unknown = client.get("/recommend", params={"user_id": 777, "explain": "true"}).json()
    assert unknown["source"] == "popularity" and all(item["because"] == [] for item in unknown["items"])
    assert client.get("/recommend", params={"user_id": 3, "explain": "maybe"}).status_code == 422


def test_ranked_lists_carry_ratings_counts(client: TestClient) -> None:
    for path, params in (("/recommend", {"user_id": 3, "n": 8}), ("/recommend", {"user_id": 777}),
                         ("/movies/4/similar", {"n": 8}), ("/popular", {"n": 8})):
        items = client.get(path, params=params).json()["items"]
        assert items
        for item in items:
            assert item["ratings_count"] == client.get(f"/movies/{item['movie_id']}").json()["ratings_count"], path


def test_openapi_documents_explain_on_recommend_only(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    params = {p["name"] for p in spec["paths"]["/recommend"]["get"]["parameters"]}
    assert "explain" in params
    assert "explain" not in {p["name"] for p in spec["paths"]["/movies/{movie_id}/similar"]["get"]["parameters"]}
    schemas = spec["components"]["schemas"]
    assert "because" in schemas["ExplainedMovieItem"]["properties"] and "because" not in schemas["MovieItem"]["properties"]
    assert set(schemas["Reason"]["required"]) == {"movie_id", "title", "weight"}


def test_nn_models_explain_too(seeded: Engine, store: Path, make_client: Callable[..., TestClient]) -> None:
    """An nn version: explanations from the first-order decomposition, only the user's own ratings."""
    t = random_dot_tensors(MODEL_USERS, MODEL_MOVIES, k=6, seed=11)
    rng = np.random.default_rng(11)
    t["mlp.0.weight"] = (rng.normal(size=(8, 12)) * 0.5).astype(np.float32)
    t["mlp.0.bias"] = (rng.normal(size=8) * 0.2).astype(np.float32)
    t["mlp.1.weight"] = (rng.normal(size=(1, 8)) * 0.5).astype(np.float32)
    t["mlp.1.bias"] = np.zeros(1, dtype=np.float32)
    ModelStore(store).publish(t, manifest_for(t, kind="nn"))
    client = make_client()
    mine = {3: 5.0, 8: 1.0, 14: 4.5, 21: 4.0}
    assert client.post("/ratings", json=[{"user_id": 6000, "movie_id": m, "rating": r}
                                         for m, r in mine.items()]).status_code == 201
    body = client.get("/recommend", params={"user_id": 6000, "n": 12, "explain": "true"}).json()
    assert body["source"] == "fold_in"
    _check_reasons(body["items"], mine)
    assert any(item["because"] for item in body["items"])
