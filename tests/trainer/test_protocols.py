"""The cross-validation protocols of trainer.split: what each fold holds out, on random rating sets."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer.data import from_raw
from trainer.split import cold_user_split, latest_fold, latest_split, time_cut_split


@st.composite
def ratings(draw: st.DrawFn):  # noqa: ANN201
    n_users = draw(st.integers(1, 25))
    rows = []
    for u in range(n_users):
        movies = draw(st.lists(st.integers(1, 40), min_size=1, max_size=30, unique=True))
        rows += [(u + 1, m, draw(st.integers(1, 5)), draw(st.integers(0, 50))) for m in movies]
    u, m, r, t = (np.array(x) for x in zip(*rows, strict=True))
    return from_raw(u, m, r.astype(np.float32), t)


@settings(max_examples=60, deadline=None)
@given(data=ratings(), seed=st.integers(0, 2**31))
def test_latest_fold_is_latest_split_for_some_users(data, seed: int) -> None:  # noqa: ANN001
    fold = latest_fold(data, seed)
    full = latest_split(data)
    assert not np.any(fold & ~full)
    held_users = set(data.user[fold].tolist())
    # A chosen user loses all their latest ratings; the others none.
    for u in held_users:
        assert np.array_equal(fold[data.user == u], full[data.user == u])
    assert np.array_equal(latest_fold(data, seed), fold)


@settings(max_examples=60, deadline=None)
@given(data=ratings(), seed=st.integers(0, 2**31), given_n=st.integers(1, 5), min_test=st.integers(1, 4))
def test_cold_users_are_out_of_training_and_give_their_first_ratings(data, seed: int, given_n: int,  # noqa: ANN001
                                                                      min_test: int) -> None:
    train, given, test = cold_user_split(data, seed, users_frac=0.3, given=given_n, min_test=min_test)
    assert np.all(train.astype(int) + given + test == 1)  # a partition
    held = np.unique(data.user[given | test])
    assert not np.isin(data.user[train], held).any()
    counts = np.bincount(data.user, minlength=data.n_users)
    assert len(held) == min(int(np.sum(counts >= given_n + min_test)), int(round(0.3 * data.n_users)))
    for u in held:
        mine = data.user == u
        assert counts[u] >= given_n + min_test and given[mine].sum() == given_n
        # Given ratings are the earliest ones (by time, then movie).
        key = data.rated_at[mine].astype(np.int64) * 1000 + data.movie[mine]
        assert key[given[mine]].max() < key[test[mine]].min()


@settings(max_examples=60, deadline=None)
@given(data=ratings(), seed=st.integers(0, 2**31))
def test_time_cut_trains_on_the_past_and_tests_known_users_on_the_future(data, seed: int) -> None:  # noqa: ANN001
    train, test = time_cut_split(data, seed)
    assert train.any() and not np.any(train & test)
    if test.any():
        assert data.rated_at[train].max() < data.rated_at[test].min()
        assert np.isin(data.user[test], data.user[train]).all()
    later_new = ~train & ~np.isin(data.user, data.user[train])
    assert not np.any(test & later_new)
