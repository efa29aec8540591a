"""EASE and item-kNN (trainer.itemitem) against their definitions, on random small rating sets."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer.itemitem import cosine_knn, ease, gram, item_term, rated_rows, user_item_scores, with_item_term


@st.composite
def interactions(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int, int]:
    n, m = draw(st.integers(1, 9)), draw(st.integers(2, 9))
    pairs = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, m - 1)), min_size=1, max_size=40))
    user, movie = (np.array(x, dtype=np.int32) for x in zip(*pairs, strict=True))
    return user, movie, n, m


def _binary(user: np.ndarray, movie: np.ndarray, n: int, m: int) -> np.ndarray:
    x = np.zeros((n, m))
    x[user, movie] = 1.0
    return x


@settings(max_examples=60, deadline=None)
@given(data=interactions(), lam=st.floats(0.5, 500))
def test_ease_solves_its_closed_form(data: tuple, lam: float) -> None:
    user, movie, n, m = data
    x = _binary(user, movie, n, m)
    np.testing.assert_allclose(gram(user, movie, n, m), x.T @ x)
    b = ease(user, movie, n, m, lam).astype(np.float64)
    assert np.all(np.diag(b) == 0)
    # Stationarity of min ||X - XB||^2 + lam ||B||^2 s.t. diag(B) = 0: off the diagonal, (X'X + lam I) B = X'X.
    lhs = (x.T @ x + lam * np.eye(m)) @ b
    off = ~np.eye(m, dtype=bool)
    np.testing.assert_allclose(lhs[off], (x.T @ x)[off], atol=1e-4 * max(1.0, lam))


@settings(max_examples=60, deadline=None)
@given(data=interactions(), k=st.integers(0, 10))
def test_item_knn_is_the_top_k_cosine(data: tuple, k: int) -> None:
    user, movie, n, m = data
    x = _binary(user, movie, n, m)
    norms = np.sqrt(np.maximum((x * x).sum(0), 1e-12))
    cos = (x.T @ x) / norms[:, None] / norms[None, :]
    np.fill_diagonal(cos, 0.0)
    s = cosine_knn(user, movie, n, m, k)
    assert np.all((s != 0).sum(axis=1) <= k)
    nz = s != 0
    np.testing.assert_allclose(s[nz], cos[nz], rtol=1e-5)
    for r in range(m):  # nothing dropped is larger than what was kept
        if nz[r].any() and (~nz[r]).any():
            assert cos[r][~nz[r]].max() <= s[r][nz[r]].min() + 1e-6


@settings(max_examples=40, deadline=None)
@given(data=interactions(), blend=st.floats(0.1, 3))
def test_the_stored_term_adds_blend_times_ease_over_rated_movies(data: tuple, blend: float) -> None:
    user, movie, n, m = data
    b = ease(user, movie, n, m, 10.0)
    term = item_term(user, movie, n, m, 10.0, m, blend)
    assert term is not None
    users = np.arange(n)
    expected = user_item_scores(b, user, movie, users) * np.float32(blend)
    zero = lambda us: np.zeros((len(us), m), np.float32)  # noqa: E731
    got = with_item_term(zero, term, user, movie, n)(users)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert [sorted(set(r.tolist())) for r in rated_rows(user, movie, n)] == \
        [sorted(set(movie[user == u].tolist())) for u in range(n)]


def test_no_term_when_blend_is_zero_or_the_catalogue_too_large() -> None:
    user, movie = np.array([0, 1], np.int32), np.array([0, 1], np.int32)
    assert item_term(user, movie, 2, 2, 10.0, 10, 0.0) is None
    assert item_term(user, movie, 2, 100_000, 10.0, 10, 1.0) is None
