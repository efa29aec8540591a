"""Metric functions against hand-computed values, and properties with hypothesis."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer.data import Ratings
from trainer.metrics import BiasBaseline, mae, popularity_scores, ranking_metrics, rmse


def _ratings(user, movie, rating, n_users, n_movies) -> Ratings:
    r = len(user)
    return Ratings(np.asarray(user, np.int32), np.asarray(movie, np.int32), np.asarray(rating, np.float32),
                   np.arange(r, dtype=np.int64), np.arange(n_users, dtype=np.int64) + 1,
                   np.arange(n_movies, dtype=np.int64) + 1)


def test_rmse_mae_hand_values() -> None:
    assert rmse(np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 5.0])) == pytest.approx(math.sqrt(5 / 3))
    assert mae(np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 5.0])) == pytest.approx(1.0)


def test_ranking_metrics_hand_computed() -> None:
    # 2 users, 6 movies. User 0 trained on movie 0; held out: movie 1 (5 stars), 2 (4), 3 (2, not relevant).
    # User 1 trained on movies 0,1; held out: movie 5 (3 stars): no relevant item, so user 1 is not averaged.
    train = _ratings([0, 1, 1], [0, 0, 1], [4, 4, 4], 2, 6)
    test = _ratings([0, 0, 0, 1], [1, 2, 3, 5], [5, 4, 2, 3], 2, 6)
    # User 0's scores: movie 0 is highest but seen (masked); order then 3, 1, 4, 5, 2.
    scores = np.array([[9, 5, 1, 6, 4, 3], [0, 0, 0, 0, 0, 0]], np.float32)
    out = ranking_metrics(train, test, lambda users: scores[users], k=2)
    # top-2 = [3, 1]: gains [0, 1]; DCG = 1/log2(3); IDCG (2 relevant) = 1 + 1/log2(3).
    assert out["ndcg@2"] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert out["recall@2"] == pytest.approx(1 / 2)
    assert out["hr@2"] == 1.0
    assert out["users"] == 1
    full = ranking_metrics(train, test, lambda users: scores[users], k=10)
    # top-5 (all unseen): [3, 1, 4, 5, 2]: gains at ranks 2 and 5.
    dcg = 1 / math.log2(3) + 1 / math.log2(6)
    assert full["ndcg@10"] == pytest.approx(dcg / (1 + 1 / math.log2(3)))
    assert full["recall@10"] == pytest.approx(1.0)


def test_unknown_relevant_movie_counts_in_denominators() -> None:
    train = _ratings([0], [0], [4], 1, 3)
    test = _ratings([0], [2], [5], 1, 3)
    scores = np.array([[0.0, 1.0, 0.5]], np.float32)
    assert ranking_metrics(train, test, lambda u: scores[u], k=1)["ndcg@1"] == 0.0


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(2, 12), st.integers(0, 2**31 - 1))
def test_ndcg_bounds_and_oracle(n_users: int, n_movies: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    pairs = [(u, m) for u in range(n_users) for m in range(n_movies) if rng.random() < 0.6]
    if not pairs:
        return
    pairs_arr = np.array(pairs)
    is_test = rng.random(len(pairs)) < 0.5
    values = rng.choice([1.0, 2.0, 3.0, 4.0, 5.0], len(pairs))
    train = _ratings(pairs_arr[~is_test, 0], pairs_arr[~is_test, 1], values[~is_test], n_users, n_movies)
    test = _ratings(pairs_arr[is_test, 0], pairs_arr[is_test, 1], values[is_test], n_users, n_movies)
    random_scores = rng.random((n_users, n_movies)).astype(np.float32)
    out = ranking_metrics(train, test, lambda u: random_scores[u])
    for key in ("ndcg@10", "recall@10", "hr@10"):
        assert 0.0 <= out[key] <= 1.0 + 1e-9
    # An oracle that scores relevant held-out movies highest is perfect when all fit in the top 10.
    oracle = np.zeros((n_users, n_movies), np.float32)
    rel = test.rating >= 4
    oracle[test.user[rel], test.movie[rel]] = 1.0
    best = ranking_metrics(train, test, lambda u: oracle[u])
    if best["users"]:
        assert best["ndcg@10"] == pytest.approx(1.0)
        assert best["ndcg@10"] >= out["ndcg@10"] - 1e-9


def test_bias_baseline_and_popularity() -> None:
    train = _ratings([0, 0, 1, 1], [0, 1, 0, 1], [5, 3, 4, 2], 2, 3)
    base = BiasBaseline(reg=0.0, passes=20).fit(train)
    # Additive data (user 0 is +0.5, movie 0 is +1): reproduced exactly without damping.
    assert base.predict(np.array([0, 1]), np.array([0, 1])) == pytest.approx([5, 2], abs=1e-6)
    assert popularity_scores(train).tolist() == [2.0, 2.0, 0.0]
