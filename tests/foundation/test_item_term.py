"""movierec.item_term: the sparse item-item term's scores and contributions equal the dense matrix they stand for."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from movierec.item_term import ItemTerm, ItemTermError, from_dense_topk


def _dense(term: ItemTerm) -> np.ndarray:
    m = term.n_movies
    out = np.zeros((m, m), dtype=np.float64)
    for r in range(m):
        sl = slice(term.indptr[r], term.indptr[r + 1])
        out[r, term.indices[sl]] += term.weights[sl]
    return out


matrices = st.integers(1, 12).flatmap(
    lambda m: arrays(np.float32, (m, m), elements=st.floats(-3, 3, width=32) | st.just(0.0)))


@settings(max_examples=60, deadline=None)
@given(matrix=matrices, k=st.integers(0, 14), scale=st.floats(0.1, 4), data=st.data())
def test_topk_scores_and_contributions_match_the_dense_matrix(matrix: np.ndarray, k: int, scale: float,
                                                             data: st.DataObject) -> None:
    m = matrix.shape[0]
    term = from_dense_topk(matrix, k, scale)
    term.check(m)
    dense = _dense(term)
    # Each row keeps at most k entries, and those are the largest in absolute value, times scale.
    kept = np.diff(term.indptr)
    assert np.all(kept <= min(k, m))
    for r in range(m):
        if kept[r]:
            smallest_kept = np.abs(matrix[r, term.indices[term.indptr[r]:term.indptr[r + 1]]]).min()
            assert (np.abs(matrix[r]) > smallest_kept + 1e-6).sum() <= kept[r]
    # Stored as float32: a product below float32's normal range (a subnormal) keeps few bits.
    np.testing.assert_allclose(dense[dense != 0], (matrix.astype(np.float64) * np.float32(scale))[dense != 0],
                               rtol=1e-5, atol=float(np.finfo(np.float32).tiny))
    rated = np.array(data.draw(st.lists(st.integers(0, m - 1), max_size=m, unique=True)), dtype=np.int64)
    targets = np.array(data.draw(st.lists(st.integers(0, m - 1), max_size=2 * m)), dtype=np.int64)
    np.testing.assert_allclose(term.scores(rated), dense[rated].sum(axis=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(term.contributions(rated, targets), dense[np.ix_(rated, targets)].T,
                               rtol=1e-6, atol=1e-6)


def test_tensors_round_trip_and_absent_term_is_none() -> None:
    term = from_dense_topk(np.arange(16, dtype=np.float32).reshape(4, 4), 2)
    again = ItemTerm.from_tensors({**term.tensors(), "user_ids": np.zeros(1)}, 4)
    assert again is not None and np.array_equal(again.indices, term.indices)
    assert ItemTerm.from_tensors({"movie_ids": np.arange(4)}) is None


@pytest.mark.parametrize("damage", ["partial", "rows", "index", "nan", "pointer", "dtype"])
def test_inconsistent_tensors_are_refused(damage: str) -> None:
    t = from_dense_topk(np.ones((3, 3), np.float32), 2).tensors()
    broken = {
        "partial": {"item_indptr": t["item_indptr"]},
        "rows": t,
        "index": {**t, "item_indices": t["item_indices"] + 3},
        "nan": {**t, "item_weights": np.full_like(t["item_weights"], np.nan)},
        "pointer": {**t, "item_indptr": t["item_indptr"][::-1].copy()},
        "dtype": {**t, "item_indices": t["item_indices"].astype(np.int64)},
    }[damage]
    with pytest.raises(ItemTermError):
        ItemTerm.from_tensors(broken, 4 if damage == "rows" else 3)
