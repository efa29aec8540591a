"""The recommendation layer without HTTP: what it assembles from the model, the catalogue and the user's ratings.

Only paths that need no database are exercised here (the session factory refuses to be used);
the database-backed paths (fold-in from stored ratings, 404s, popularity) are covered through
the API in test_endpoints.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app import recommendation
from app.catalogue import Catalogue
from app.model_registry import ServingState
from app.recommendation import Filters
from app.repository import UserRatings
from app.scoring import LoadedModel
from movierec.store import ModelStore

from .helpers import manifest_for, random_dot_tensors


class _NoDatabase:
    """A session factory for code paths that must not touch the database."""

    def __call__(self) -> None:
        raise AssertionError("the database was used")


@pytest.fixture
def state(tmp_path: Path) -> ServingState:
    tensors = random_dot_tensors(range(1, 11), range(1, 41), k=4, seed=5)
    store = ModelStore(tmp_path / "models")
    model = LoadedModel(store.load(store.publish(tensors, manifest_for(tensors, max_rated_at=1_000))))
    # Movie 40 is not in the database; odd ids are comedies; years 1961..1999.
    rows = [(i, f"Movie {i}", 1960 + i, "Comedy|Drama" if i % 2 else "Drama") for i in range(1, 40)]
    return ServingState(model, Catalogue.from_rows(rows).aligned_to(model.movie_ids))


def _ratings(movie_ids: list[int], at: int = 500) -> UserRatings:
    return UserRatings.from_rows([(m, 4.0, at) for m in movie_ids])


def test_recommend_ranks_by_the_model_within_the_filters(state: ServingState) -> None:
    rated = [1, 3, 5]
    filters = Filters(genre="comedy", min_year=1970, exclude={11, 13})
    result = recommendation.recommend(state, None, 2, _ratings(rated), 5, filters)  # type: ignore[arg-type]
    assert (result.source, result.personalized, result.model_version) == ("model", True, state.model.version)
    ids = [item.movie_id for item in result.items]
    allowed = [m for m in range(10, 40) if m % 2 and m not in (11, 13)]
    scores = state.model.rank_scores(state.model.trained_user(1))
    assert ids == sorted(allowed, key=lambda m: -scores[m - 1])[:5]
    first = result.items[0]
    assert (first.title, first.year, first.genres) == (f"Movie {ids[0]}", 1960 + ids[0], ["Comedy", "Drama"])
    assert first.score == pytest.approx(float(scores[ids[0] - 1]))


def test_recommend_folds_in_a_user_who_rated_after_the_snapshot(state: ServingState) -> None:
    result = recommendation.recommend(state, None, 2, _ratings([1, 2, 3], at=2_000), 5,  # type: ignore[arg-type]
                                      Filters())
    assert result.source == "fold_in" and not {1, 2, 3} & {item.movie_id for item in result.items}
    state.stale_users.add(4)
    assert recommendation.recommend(state, None, 4, _ratings([7]), 3, Filters()).source == "fold_in"  # type: ignore[arg-type]


def test_movies_missing_from_the_database_are_never_recommended_nor_similar(state: ServingState) -> None:
    result = recommendation.recommend(state, None, 1, _ratings([]), 40, Filters())  # type: ignore[arg-type]
    assert len(result.items) == 39 and 40 not in {item.movie_id for item in result.items}
    similar = recommendation.similar(state, _NoDatabase(), 7, 50)  # type: ignore[arg-type]
    assert {item.movie_id for item in similar.items} == set(range(1, 40)) - {7}
    assert similar.model_version == state.model.version


def test_trained_users_are_scored_without_the_database(state: ServingState) -> None:
    assert recommendation.current_user(state, 3) is not None
    assert recommendation.current_user(state, 99) is None
    state.stale_users.add(3)
    assert recommendation.current_user(state, 3) is None
    pairs = [(1, 5), (2, 6), (1, 7)]
    batch = recommendation.predict_pairs(state, _NoDatabase(), pairs)  # type: ignore[arg-type]
    model = state.model
    expected = model.predict(model.user_factors[[0, 1, 0]], model.user_bias[[0, 1, 0]], np.array([4, 5, 6]))
    np.testing.assert_allclose(batch.ratings, expected)
    assert batch.personalized.all() and batch.user_ids.tolist() == [1, 2, 1] and len(batch) == 3
