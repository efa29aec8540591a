"""app.explain's fast paths against the straightforward explanation they replace.

The reference below is the explanation as it was before the fast paths (commit b7e71d3's
``explain_rows`` and ``top_reasons``): a dense ``(targets, rated)`` contribution matrix (the item
term's ``contributions`` or :func:`app.explain.decompose`), then a partial sort per target. The
fast paths -- the item term's stored entries instead of the dense matrix, the fold-in's own
system reused, the cut and rounding of the few candidates in Python -- must give the same reasons.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.catalogue import Catalogue, ModelCatalogue
from app.explain import MAX_REASONS, Decomposition, decompose, explain_rows
from app.scoring import LoadedModel
from movierec.item_term import ItemTerm
from movierec.store import ModelStore

from .helpers import manifest_for, random_dot_tensors

MOVIES = list(range(1, 81))


def reference_top_reasons(decomposition: Decomposition, catalogue: ModelCatalogue,
                          limit: int = MAX_REASONS) -> list[list[dict[str, object]]]:
    """The reasons of a dense decomposition, as app.explain.top_reasons computed them before."""
    c = decomposition.contributions
    if c.size == 0:
        return [[] for _ in range(c.shape[0])]
    rows = decomposition.rated_rows
    best = np.argpartition(-c, limit - 1, axis=1)[:, :limit] if c.shape[1] > limit else \
        np.broadcast_to(np.arange(c.shape[1]), (c.shape[0], c.shape[1]))
    targets = np.arange(c.shape[0])[:, None]
    weights = c[targets, best]
    order = np.argsort(-weights, axis=1, kind="stable")
    best, weights = best[targets, order], weights[targets, order]
    top = float(weights.max())
    if top > 0:
        weights = np.round(weights, 3 - int(np.floor(np.log10(top))))
    picked_rows = rows[best]
    ids = catalogue.movie_ids[picked_rows].tolist()
    return [[{"movie_id": movie_id, "title": catalogue.titles[row], "weight": w}
             for movie_id, row, w in zip(ids_i, rows_i, weights_i, strict=True) if w > 0]
            for ids_i, rows_i, weights_i in zip(ids, picked_rows.tolist(), weights.tolist(), strict=True)]


def reference_explain(model: LoadedModel, catalogue: ModelCatalogue, rated_movie_ids: np.ndarray,
                      ratings: np.ndarray, target_rows: np.ndarray) -> list[list[dict[str, object]]]:
    """app.explain.explain_rows as it was: ratings in model-row order, a dense matrix, a partial sort."""
    rows, found = model.movie_rows(rated_movie_ids)
    rows, ratings = rows[found], np.asarray(ratings)[found]
    order = np.argsort(rows, kind="stable")
    rows, ratings = rows[order], ratings[order]
    if model.item_term is not None:
        contributions = np.asarray(model.item_term.contributions(rows, target_rows), dtype=np.float64)
        return reference_top_reasons(Decomposition(rows, ratings, contributions, None, exact=False), catalogue)
    return reference_top_reasons(decompose(model, rows, ratings, target_rows), catalogue)


def _catalogue(model: LoadedModel) -> ModelCatalogue:
    return Catalogue.from_rows([(int(m), f"Movie {m}", 1990, "Drama") for m in model.movie_ids]).aligned_to(
        model.movie_ids)


def _item_term(rng: np.random.Generator, m: int, width: int, ragged: bool, repeats: bool) -> ItemTerm:
    """A random CSR term: ``width`` neighbours a movie (grid form) or 0..width (general CSR); with
    ``repeats`` some rows list a column twice."""
    lengths = rng.integers(0, width + 1, m) if ragged else np.full(m, width)
    cols = [np.sort(rng.choice(m, size=n, replace=repeats)) for n in lengths]
    indptr = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    indices = np.concatenate(cols).astype(np.int32) if m else np.zeros(0, np.int32)
    return ItemTerm(indptr, indices, rng.normal(0, 0.1, indices.size).astype(np.float32))


rated_sets = st.lists(st.tuples(st.sampled_from(MOVIES + [999]), st.sampled_from([0.5 * i for i in range(1, 11)])),
                      min_size=0, max_size=40, unique_by=lambda pair: pair[0])
target_lists = st.lists(st.integers(0, len(MOVIES) - 1), min_size=0, max_size=25)


@settings(max_examples=60, deadline=None)
@given(rated=rated_sets, targets=target_lists, seed=st.integers(0, 10_000), width=st.integers(1, 30),
       ragged=st.booleans(), repeats=st.booleans())
def test_item_term_explanations_are_the_dense_ones(tmp_path_factory: pytest.TempPathFactory,
                                                   rated: list[tuple[int, float]], targets: list[int], seed: int,
                                                   width: int, ragged: bool, repeats: bool) -> None:
    """The stored entries of the term (hits) give exactly the reasons of its dense contribution matrix,
    for any rated set (unknown movies included), any targets (repeated ones included), CSR shape."""
    rng = np.random.default_rng(seed)
    t = random_dot_tensors(range(1, 31), MOVIES, k=4, seed=seed)
    t.update(_item_term(rng, len(MOVIES), width, ragged, repeats).tensors())
    store = ModelStore(tmp_path_factory.mktemp("m") / "models")
    model = LoadedModel(store.load(store.publish(t, manifest_for(t))))
    catalogue = _catalogue(model)
    movie_ids = np.array([m for m, _ in rated], dtype=np.int64)
    ratings = np.array([r for _, r in rated], dtype=np.float64)
    target_rows = np.array(targets, dtype=np.int64)
    want = reference_explain(model, catalogue, movie_ids, ratings, target_rows)
    assert explain_rows(model, catalogue, movie_ids, ratings, target_rows) == want
    # The order the database returns the ratings in changes nothing.
    order = rng.permutation(len(rated))
    assert explain_rows(model, catalogue, movie_ids[order], ratings[order], target_rows) == want


@settings(max_examples=40, deadline=None)
@given(rated=rated_sets, seed=st.integers(0, 10_000), k=st.integers(1, 12), n=st.integers(0, 20))
def test_dot_explanations_are_the_dense_ones(tmp_path_factory: pytest.TempPathFactory,
                                             rated: list[tuple[int, float]], seed: int, k: int, n: int) -> None:
    """Without an item term: the same decomposition, the same reasons as the old partial sort; with the
    request's fold-in system reused, the same contributions (to float precision) and the same reasons."""
    rng = np.random.default_rng(seed)
    t = random_dot_tensors(range(1, 31), MOVIES, k=k, seed=seed)
    store = ModelStore(tmp_path_factory.mktemp("m") / "models")
    model = LoadedModel(store.load(store.publish(t, manifest_for(t))))
    catalogue = _catalogue(model)
    rated = sorted(rated)  # model-row order (ids are sorted like rows): the reference's own summation order
    movie_ids = np.array([m for m, _ in rated], dtype=np.int64)
    ratings = np.array([r for _, r in rated], dtype=np.float64)
    target_rows = rng.choice(len(MOVIES), size=n, replace=False).astype(np.int64)
    want = reference_explain(model, catalogue, movie_ids, ratings, target_rows)
    assert explain_rows(model, catalogue, movie_ids, ratings, target_rows) == want

    rows, found = model.movie_rows(movie_ids)
    if not found.any():
        return
    user = model.fold_in(rows[found], ratings[found])
    assert user.system is not None
    reused = decompose(model, rows[found], ratings[found], target_rows, user.system)
    plain = decompose(model, rows[found], ratings[found], target_rows)
    scale = 1.0 + np.abs(plain.contributions).max(initial=0.0)
    np.testing.assert_allclose(reused.contributions, plain.contributions, rtol=0, atol=1e-9 * scale)
    np.testing.assert_allclose(reused.user_offset, plain.user_offset, rtol=0, atol=1e-9 * (1 + np.abs(plain.user_offset).max()))
    got = explain_rows(model, catalogue, movie_ids, ratings, target_rows, rated=(rows, found), user=user)
    assert [[r["movie_id"] for r in because] for because in got] == [[r["movie_id"] for r in because] for because in want]
    top = max((r["weight"] for because in want for r in because), default=1.0)
    quantum = 10.0 ** (np.floor(np.log10(top)) - 3)
    for mine, theirs in zip(got, want, strict=True):
        np.testing.assert_allclose([r["weight"] for r in mine], [r["weight"] for r in theirs], rtol=0,
                                   atol=quantum * 1.0001)


def test_a_system_of_other_ratings_is_not_reused(tmp_path: Path) -> None:
    t = random_dot_tensors(range(1, 31), MOVIES, k=5, seed=3)
    store = ModelStore(tmp_path / "models")
    model = LoadedModel(store.load(store.publish(t, manifest_for(t))))
    rows, ratings, targets = np.array([1, 5, 9]), np.array([5.0, 1.0, 4.0]), np.arange(20, 30)
    other = model.fold_in(rows, np.array([1.0, 5.0, 4.0]))
    np.testing.assert_array_equal(decompose(model, rows, ratings, targets, other.system).contributions,
                                  decompose(model, rows, ratings, targets).contributions)


def test_equal_weights_are_ordered_by_model_row(tmp_path: Path) -> None:
    """Ties are broken the same way whatever order the ratings come in: the lower model row first."""
    m = len(MOVIES)
    indptr = np.arange(0, 2 * m + 1, 2, dtype=np.int64)
    indices = np.array([[(j + 40) % m, (j + 41) % m] for j in range(m)], dtype=np.int32).ravel()
    indices[:8] = [50, 51, 50, 51, 50, 51, 50, 51]  # rows 0-3 all point at rows 50 and 51 with equal weights
    t = random_dot_tensors(range(1, 31), MOVIES, k=3, seed=1)
    t.update(ItemTerm(indptr, indices, np.full(indices.size, 0.25, np.float32)).tensors())
    store = ModelStore(tmp_path / "models")
    model = LoadedModel(store.load(store.publish(t, manifest_for(t))))
    for rated in ([4, 3, 2, 1], [1, 2, 3, 4], [2, 4, 1, 3]):
        reasons = explain_rows(model, _catalogue(model), np.array(rated), np.full(4, 4.0), np.array([50, 51]))
        assert [[r["movie_id"] for r in because] for because in reasons] == [[1, 2, 3], [1, 2, 3]]
