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
