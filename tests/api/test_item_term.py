"""The item-item term of the ranking score, served: /recommend adds it for trained and fold-in users alike,
/predict never uses it, and versions without one rank as before."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from app.scoring import LoadedModel
from movierec.item_term import ItemTerm
from movierec.model_format import CorruptModelError
from movierec.store import ModelStore

from .conftest import MODEL_MOVIES, MODEL_USERS
from .helpers import manifest_for, random_dot_tensors

#: Having rated movie SOURCE pushes movie TARGET up by BOOST (far more than any embedding score here).
SOURCE, TARGET, BOOST = 2, 17, 50.0


def _term(n_movies: int) -> ItemTerm:
    """Row of SOURCE -> TARGET (BOOST) and a small push to movie 9; every other row empty."""
    rows = {SOURCE - 1: [(8, 0.5), (TARGET - 1, BOOST)]}
    indptr, indices, weights = [0], [], []
    for r in range(n_movies):
        for col, w in rows.get(r, []):
            indices.append(col)
            weights.append(w)
        indptr.append(len(indices))
    return ItemTerm(np.array(indptr, np.int64), np.array(indices, np.int32), np.array(weights, np.float32))


def _publish(store: Path, with_term: bool) -> int:
    tensors = random_dot_tensors(MODEL_USERS, MODEL_MOVIES, k=8, seed=3)
    if with_term:
        tensors.update(_term(len(MODEL_MOVIES)).tensors())
    return ModelStore(store).publish(tensors, manifest_for(tensors, item_term={"method": "test", "blend": 1.0}))


def test_a_fold_in_user_is_ranked_with_the_item_term(seeded: Engine, store: Path,
                                                     make_client: Callable[..., TestClient]) -> None:
    version = _publish(store, with_term=True)
    client = make_client()
    # A user the model never saw rates SOURCE (and one more), then asks for recommendations.
    for movie, stars in ((SOURCE, 4.0), (5, 3.0)):
        assert client.post("/ratings", json={"user_id": 700, "movie_id": movie, "rating": stars}).status_code == 201
    body = client.get("/recommend", params={"user_id": 700, "n": 25}).json()
    assert body["source"] == "fold_in"
    items = body["items"]
    assert items[0]["movie_id"] == TARGET

    # Each score is exactly the embedding score of the folded-in vector plus the item term's rows.
    model = LoadedModel(ModelStore(store).load(version))
    rated = np.array([SOURCE - 1, 4])
    vec = model.fold_in(rated, np.array([4.0, 3.0]))
    plain = model.rank_scores(vec)
    for item in items:
        row = item["movie_id"] - 1
        extra = BOOST if item["movie_id"] == TARGET else 0.5 if item["movie_id"] == 9 else 0.0
        assert item["score"] == pytest.approx(float(plain[row]) + extra, rel=1e-4, abs=1e-4)


def test_a_trained_user_gets_the_item_term_of_their_stored_ratings(seeded: Engine, store: Path,
                                                                  make_client: Callable[..., TestClient]) -> None:
    _publish(store, with_term=True)
    client = make_client()
    # The fixture's user 1 rated movies 2..6 (SOURCE among them); user 5 rated 6..10 (not SOURCE).
    first = client.get("/recommend", params={"user_id": 1, "n": 3}).json()
    assert first["source"] == "model" and first["items"][0]["movie_id"] == TARGET
    other = client.get("/recommend", params={"user_id": 5, "n": 25}).json()
    assert all(item["score"] < BOOST / 2 for item in other["items"])


def test_predict_ignores_the_item_term(seeded: Engine, tmp_path: Path,
                                       make_client: Callable[..., TestClient]) -> None:
    plain_store, term_store = tmp_path / "plain", tmp_path / "term"
    _publish(plain_store, with_term=False)
    _publish(term_store, with_term=True)
    params = {"user_id": 1, "movie_id": TARGET}
    with_term = make_client(model_store=term_store).get("/predict", params=params).json()
    without = make_client(model_store=plain_store).get("/predict", params=params).json()
    assert with_term["rating"] == pytest.approx(without["rating"])


def test_a_version_without_the_term_ranks_by_the_embeddings_alone(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    model = LoadedModel(store.load(_publish(tmp_path, with_term=False)))
    assert model.item_term is None
    user = model.trained_user(0)
    np.testing.assert_array_equal(model.rank_scores(user, np.array([SOURCE - 1])), model.rank_scores(user))


def test_a_damaged_item_term_is_refused_at_publish(tmp_path: Path) -> None:
    tensors = random_dot_tensors(MODEL_USERS, MODEL_MOVIES, k=4)
    term = _term(len(MODEL_MOVIES)).tensors()
    bad_index = {**term, "item_indices": np.full_like(term["item_indices"], 99)}
    for broken in ({"item_indptr": term["item_indptr"]}, bad_index):
        with pytest.raises(CorruptModelError):
            ModelStore(tmp_path).publish({**tensors, **broken}, manifest_for(tensors))
    assert ModelStore(tmp_path).versions() == []
