"""app.explain: the "because you rated" decomposition against the fold-in it decomposes (no HTTP)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.catalogue import Catalogue, ModelCatalogue
from app.explain import MAX_REASONS, decompose, explain_rows, nn_at_typical_user, top_reasons
from app.scoring import LoadedModel, UserVector
from movierec.store import ModelStore

from .helpers import manifest_for, random_dot_tensors

MOVIES = range(1, 61)


def _load(root: Path, tensors: dict[str, np.ndarray], kind: str = "dot", **extra: object) -> LoadedModel:
    store = ModelStore(root / "models")
    return LoadedModel(store.load(store.publish(tensors, manifest_for(tensors, kind=kind, **extra))))


def _catalogue(model: LoadedModel) -> ModelCatalogue:
    return Catalogue.from_rows([(int(m), f"Movie {m}", 1990, "Drama") for m in model.movie_ids]).aligned_to(
        model.movie_ids)


def _nn_tensors(seed: int, k: int = 5, hidden: int = 7) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = random_dot_tensors(range(1, 31), MOVIES, k=k, seed=seed)
    t["mlp.0.weight"] = (rng.normal(size=(hidden, 2 * k)) * 0.6).astype(np.float32)
    t["mlp.0.bias"] = (rng.normal(size=hidden) * 0.3).astype(np.float32)
    t["mlp.1.weight"] = (rng.normal(size=(hidden, hidden)) * 0.6).astype(np.float32)
    t["mlp.1.bias"] = (rng.normal(size=hidden) * 0.3).astype(np.float32)
    t["mlp.2.weight"] = (rng.normal(size=(1, hidden)) * 0.6).astype(np.float32)
    t["mlp.2.bias"] = (rng.normal(size=1) * 0.3).astype(np.float32)
    return t


rated_sets = st.lists(st.tuples(st.sampled_from(list(MOVIES)), st.sampled_from([0.5 * i for i in range(1, 11)])),
                      min_size=1, max_size=25, unique_by=lambda pair: pair[0])


@settings(max_examples=40, deadline=None)
@given(rated=rated_sets, seed=st.integers(0, 1_000), k=st.integers(1, 12), scale=st.floats(0.05, 2.0))
def test_dot_contributions_add_up_to_the_folded_in_score(tmp_path_factory: pytest.TempPathFactory,
                                                         rated: list[tuple[int, float]], seed: int, k: int,
                                                         scale: float) -> None:
    """score_i = typical user's score_i + sum_j c_ij, exactly, for a user folded in from these ratings."""
    model = _load(tmp_path_factory.mktemp("m"), random_dot_tensors(range(1, 31), MOVIES, k=k, seed=seed,
                                                                    scale=scale))
    movie_ids = np.array([m for m, _ in rated])
    ratings = np.array([r for _, r in rated])
    rows, _ = model.movie_rows(movie_ids)
    user = model.fold_in(rows, ratings)
    targets = np.arange(len(model.movie_ids))
    dec = decompose(model, rows, ratings, targets)
    assert dec.exact and dec.contributions.shape == (len(targets), len(rated))
    typical = UserVector(model.prior_mean[: model.k].astype(np.float32), 0.0, "baseline")
    expected = model.rank_scores(user).astype(np.float64) - model.rank_scores(typical)
    tol = 1e-4 * (1 + np.abs(expected).max())
    np.testing.assert_allclose(dec.contributions.sum(axis=1), expected, atol=tol)
    np.testing.assert_allclose(dec.user_offset, user.vec - model.prior_mean[: model.k], atol=tol)

    # The reasons are the largest positive contributions, largest first, and only rated movies.
    reasons = top_reasons(dec, _catalogue(model))
    # Weights are rounded to 4 significant digits of the largest one in the answer.
    top = max((c.max() for c in dec.contributions if c.size), default=0.0)
    tol = 0.5 * 10.0 ** (np.floor(np.log10(top)) - 3) if top > 0 else 0.0
    for contribution, because in zip(dec.contributions, reasons, strict=True):
        weights = [reason["weight"] for reason in because]
        assert len(because) <= MAX_REASONS and all(w > 0 for w in weights) and weights == sorted(weights, reverse=True)
        positive = sorted(contribution[contribution > 0], reverse=True)[: len(weights)]
        np.testing.assert_allclose(weights, positive, atol=tol * 1.0001, rtol=0)
        assert all(c <= tol for c in sorted(contribution[contribution > 0], reverse=True)[len(weights):MAX_REASONS])
        for reason in because:
            assert reason["movie_id"] in movie_ids.tolist()
            assert reason["title"] == f"Movie {reason['movie_id']}"
            assert abs(contribution[movie_ids.tolist().index(reason["movie_id"])] - reason["weight"]) <= tol * 1.0001


def test_a_liked_movie_is_the_reason_for_its_neighbours_and_not_for_its_opposites(tmp_path: Path) -> None:
    """Hand-built factors: movies 1-3 point one way, 4-6 the opposite; the user loves 1 and hates 4."""
    t = random_dot_tensors(range(1, 31), range(1, 7), k=2, seed=0)
    t["movie_factors"] = np.array([[1, 0], [0.9, 0.1], [0.8, -0.1], [-1, 0], [-0.9, 0.1], [-0.8, -0.1]], np.float32)
    t["movie_bias"][:] = 0
    model = _load(tmp_path, t, foldin_l2=0.5)
    targets = np.array([1, 2, 4, 5])  # model rows of movies 2, 3, 5, 6
    reasons = explain_rows(model, _catalogue(model), np.array([1, 4]), np.array([5.0, 0.5]), targets)
    # Movies 2 and 3 (like 1): both ratings raise them (liking 1, disliking its opposite 4).
    assert {r["movie_id"] for r in reasons[0]} == {1, 4} and {r["movie_id"] for r in reasons[1]} == {1, 4}
    # Movies 5 and 6 (like 4, which the user hated): nothing raised them.
    assert reasons[2] == [] and reasons[3] == []


def test_ratings_of_movies_the_model_does_not_know_are_ignored(tmp_path: Path) -> None:
    model = _load(tmp_path, random_dot_tensors(range(1, 31), MOVIES, k=4, seed=2))
    reasons = explain_rows(model, _catalogue(model), np.array([3, 999, 5]), np.array([5.0, 5.0, 4.5]),
                           np.arange(10))
    assert {r["movie_id"] for because in reasons for r in because} <= {3, 5}
    assert explain_rows(model, _catalogue(model), np.array([999]), np.array([5.0]), np.arange(3)) == [[], [], []]
    assert explain_rows(model, _catalogue(model), np.array([3]), np.array([5.0]), np.arange(0)) == []


def test_nn_gradients_match_finite_differences_of_the_served_logit(tmp_path: Path) -> None:
    """The nn decomposition's features are the gradient of the model's own ranking logit at the typical user."""
    model = _load(tmp_path, _nn_tensors(seed=4), kind="nn")
    rows = np.arange(20)
    logits, grads = nn_at_typical_user(model, rows)
    mean = model.user_factors.astype(np.float64).mean(axis=0)

    def logit(u: np.ndarray) -> np.ndarray:
        return (model.rank_scores(UserVector(u.astype(np.float32), 0.0, "model")) - model.rank_term)[rows]

    np.testing.assert_allclose(logits, logit(mean), atol=1e-4)
    eps = 1e-2
    for d in range(model.k):
        step = np.zeros(model.k)
        step[d] = eps
        np.testing.assert_allclose(grads[:, d], (logit(mean + step) - logit(mean - step)) / (2 * eps), atol=2e-3)


def test_nn_explanations_name_rated_movies_with_positive_ordered_weights(tmp_path: Path) -> None:
    model = _load(tmp_path, _nn_tensors(seed=9), kind="nn")
    rated = np.array([2, 8, 15, 33, 47])
    reasons = explain_rows(model, _catalogue(model), rated, np.array([5.0, 4.0, 1.0, 4.5, 2.0]), np.arange(60))
    assert any(reasons)
    for because in reasons:
        weights = [r["weight"] for r in because]
        assert {r["movie_id"] for r in because} <= set(rated.tolist()) and all(w > 0 for w in weights)
        assert weights == sorted(weights, reverse=True)


class _DenseItemTerm:
    """The interface of the item-item ranking term (contributions of rated rows to target rows), dense."""

    def __init__(self, weights: np.ndarray) -> None:
        self.weights = weights  # (m, m): W[j, i], what rated movie j adds to movie i's score

    def contributions(self, rated_rows: np.ndarray, target_rows: np.ndarray) -> np.ndarray:
        return self.weights[np.ix_(rated_rows, target_rows)].T


def test_an_item_item_term_adds_its_weights_to_the_contributions(tmp_path: Path) -> None:
    model = _load(tmp_path, random_dot_tensors(range(1, 31), MOVIES, k=4, seed=6))
    rated, ratings, targets = np.array([3, 9, 20]), np.array([4.0, 4.5, 3.0]), np.arange(30, 40)
    rows, _ = model.movie_rows(rated)
    plain = decompose(model, rows, ratings, targets).contributions
    weights = np.zeros((len(MOVIES), len(MOVIES)))
    weights[rows[2], targets] = 50.0  # movie 20 pushes every target far up
    model.item_term = _DenseItemTerm(weights)  # type: ignore[attr-defined]
    with_term = decompose(model, rows, ratings, targets).contributions
    np.testing.assert_allclose(with_term - plain, weights[np.ix_(rows, targets)].T)
    # The API's explanation of such a version is the item-item term's own split: W[j, i] exactly.
    explained = explain_rows(model, _catalogue(model), rated, ratings, targets)
    assert all([(r["movie_id"], r["weight"]) for r in because] == [(20, 50.0)] for because in explained)
