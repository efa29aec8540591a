"""The two evaluation protocols.

* :func:`random_split`: a random fraction of all ratings (default 10 %) held out, with a fixed
  seed, for RMSE/MAE. The seed is a constant of the protocol (``SPLIT_SEED``), independent of the
  training seed, so that runs on the same data hold out the same ratings and the quality gate can
  compare their metrics.
* :func:`latest_split`: for every user, the ratings sorted by time (ties broken by movie id) and
  the latest ``floor(frac * count)`` held out, for NDCG/Recall/HR@10. A user with fewer than
  ``1 / frac`` ratings keeps them all in training (nothing to hold out without leaving the user
  with no history).
"""

from __future__ import annotations

import numpy as np

from trainer.data import Ratings

SPLIT_SEED = 20240531
RANDOM_TEST_FRACTION = 0.1
LATEST_TEST_FRACTION = 0.2


def random_split(ratings: Ratings, frac: float = RANDOM_TEST_FRACTION, seed: int = SPLIT_SEED) -> np.ndarray:
    """Boolean mask over ``ratings``: True for the held-out ``frac`` (exactly ``round(frac * r)`` rows)."""
    r = len(ratings)
    rng = np.random.default_rng(seed)
    n_test = int(round(frac * r))
    mask = np.zeros(r, dtype=bool)
    mask[rng.permutation(r)[:n_test]] = True
    return mask


def latest_split(ratings: Ratings, frac: float = LATEST_TEST_FRACTION) -> np.ndarray:
    """Boolean mask over ``ratings``: True for each user's latest ``floor(frac * count)`` ratings."""
    r = len(ratings)
    if r == 0:
        return np.zeros(0, dtype=bool)
    # Sort by (user, time, movie); lexsort's last key is the primary one.
    order = np.lexsort((ratings.movie, ratings.rated_at, ratings.user))
    users_sorted = ratings.user[order]
    counts = np.bincount(users_sorted, minlength=ratings.n_users)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    position = np.arange(r) - np.repeat(starts, counts)  # rank of each row within its user, oldest first
    n_test = np.floor(counts * frac + 1e-9).astype(np.int64)
    held = position >= np.repeat(counts - n_test, counts)
    mask = np.zeros(r, dtype=bool)
    mask[order[held]] = True
    return mask


# -- the cross-validation protocols (bench/accuracy.py): several folds of each, tuning and evaluation kept apart --

#: Fraction of users whose latest ratings a :func:`latest_split` fold holds out (different users per seed).
FOLD_USER_FRACTION = 0.5
#: Cold-user protocol: fraction of users held out of training, ratings given to the fold-in, test ratings at least.
COLD_USER_FRACTION = 0.1
COLD_GIVEN = 10
COLD_MIN_TEST = 5
#: Global time cut: the cut falls at a quantile of all timestamps drawn uniformly from this range per seed.
TIME_CUT_QUANTILES = (0.75, 0.9)


def latest_fold(ratings: Ratings, seed: int, frac: float = LATEST_TEST_FRACTION,
                users_frac: float = FOLD_USER_FRACTION) -> np.ndarray:
    """:func:`latest_split` restricted to a random ``users_frac`` of the users (chosen by ``seed``).

    The other users keep all their ratings in training. Different seeds hold out different users,
    so folds vary and a fold tuned on says little about another fold's test users.
    """
    mask = latest_split(ratings, frac)
    rng = np.random.default_rng(seed)
    chosen = rng.random(ratings.n_users) < users_frac
    return mask & chosen[ratings.user]


def cold_user_split(ratings: Ratings, seed: int, users_frac: float = COLD_USER_FRACTION, given: int = COLD_GIVEN,
                    min_test: int = COLD_MIN_TEST) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Users held out of training entirely, who then give their first ``given`` ratings.

    Returns boolean masks ``(train, given, test)`` over ``ratings``, pairwise disjoint: a random
    ``users_frac`` of the users with at least ``given + min_test`` ratings are held out; their
    ``given`` earliest ratings (by time, ties by movie) are what the fold-in sees, the rest are the
    test set; every other rating is training.
    """
    counts = np.bincount(ratings.user, minlength=ratings.n_users)
    eligible = np.flatnonzero(counts >= given + min_test)
    rng = np.random.default_rng(seed)
    n_held = min(len(eligible), int(round(users_frac * ratings.n_users)))
    held = np.zeros(ratings.n_users, dtype=bool)
    held[rng.choice(eligible, size=n_held, replace=False)] = True
    order = np.lexsort((ratings.movie, ratings.rated_at, ratings.user))
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    position = np.empty(len(ratings), dtype=np.int64)
    position[order] = np.arange(len(ratings)) - np.repeat(starts, counts)
    in_held = held[ratings.user]
    return ~in_held, in_held & (position < given), in_held & (position >= given)


def time_cut_split(ratings: Ratings, seed: int,
                   quantiles: tuple[float, float] = TIME_CUT_QUANTILES) -> tuple[np.ndarray, np.ndarray]:
    """A global time cut: ``(train, test)`` masks.

    The cut ``t`` is the ``q``-quantile of all timestamps, ``q`` drawn uniformly from ``quantiles``
    by ``seed``; training = ratings at or before ``t``; test = later ratings of users who have at
    least one training rating (the others are new users, the cold-user protocol's business).
    Later ratings of other users are in neither mask.
    """
    q = np.random.default_rng(seed).uniform(*quantiles)
    cut = np.quantile(ratings.rated_at, q, method="lower")
    train = ratings.rated_at <= cut
    known = np.bincount(ratings.user[train], minlength=ratings.n_users) > 0
    return train, ~train & known[ratings.user]
