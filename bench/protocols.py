"""The cross-validation protocols of bench/accuracy.py and bench/tune.py: folds, and which seeds tune or evaluate.

Four protocols on MovieLens 100K (masks from :mod:`trainer.split`, one implementation):

* ``random``  -- a random 10 % of all ratings held out (RMSE, MAE); the fold seed draws them;
* ``latest``  -- each user's latest 20 % held out, for a random half of the users (the fold seed
  picks them; the other half keep everything in training) (NDCG@10, Recall@10, HR@10);
* ``cold``    -- 10 % of the users held out of training entirely; each gives their first 10
  ratings (by time) to the fold-in, exactly as POST /ratings then /recommend does, and is ranked
  on the rest; candidates exclude the 10 given movies;
* ``timecut`` -- a global time cut at a quantile of all timestamps drawn from 0.75..0.9 by the
  fold seed; training before it, test = later ratings of users known before it.

Seeds: **tuning folds** use :data:`TUNING_SEEDS`, **evaluation folds** :data:`EVALUATION_SEEDS`;
the two sets never meet. Defaults are chosen on tuning folds only (bench/tune.py); the tables in
docs/benchmarks.md come from evaluation folds only (bench/accuracy.py). A fold's seed is also the
training seed of every system fitted on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from bench.common import Triples

TUNING_SEEDS = (101, 102, 103, 104, 105)
EVALUATION_SEEDS = (201, 202, 203, 204, 205)
PROTOCOLS = ("random", "latest", "cold", "timecut")
#: Folds per protocol (the first n seeds of the chosen set): >= 5 for ratings, >= 3 for each ranking protocol.
FOLDS = {"random": 5, "latest": 5, "cold": 3, "timecut": 3}
METRIC = {"random": "rmse", "latest": "ndcg@10", "cold": "ndcg@10", "timecut": "ndcg@10"}


@dataclass
class Fold:
    """One fold: training and test ratings (same dense indices as the whole data set); ``given``
    holds the cold users' fold-in ratings (``cold`` only)."""

    protocol: str
    seed: int
    train: Triples
    test: Triples
    given: Triples | None = None

    @property
    def key(self) -> str:
        return f"{self.protocol}/{self.seed}"


def seeds_of(split: str) -> tuple[int, ...]:
    """The seeds of ``split``: ``tuning`` or ``evaluation``."""
    if split == "tuning":
        return TUNING_SEEDS
    if split == "evaluation":
        return EVALUATION_SEEDS
    raise ValueError(f"split must be tuning or evaluation, not {split!r}")


def as_ratings(data: Triples):  # noqa: ANN201 - trainer.data.Ratings, imported lazily
    """The trainer's view of ``data`` (same rows, same indices)."""
    from trainer.data import Ratings

    return Ratings(data.user, data.movie, data.rating, data.ts,
                   data.user_ids if data.user_ids is not None else np.arange(data.n_users),
                   data.movie_ids if data.movie_ids is not None else np.arange(data.n_movies))


def make_fold(data: Triples, protocol: str, seed: int) -> Fold:
    """The fold of ``protocol`` drawn by ``seed``."""
    from trainer import split

    r = as_ratings(data)
    if protocol == "random":
        mask = split.random_split(r, seed=seed)
        return Fold(protocol, seed, data.subset(~mask), data.subset(mask))
    if protocol == "latest":
        mask = split.latest_fold(r, seed)
        return Fold(protocol, seed, data.subset(~mask), data.subset(mask))
    if protocol == "cold":
        train, given, test = split.cold_user_split(r, seed)
        return Fold(protocol, seed, data.subset(train), data.subset(test), data.subset(given))
    if protocol == "timecut":
        train, test = split.time_cut_split(r, seed)
        return Fold(protocol, seed, data.subset(train), data.subset(test))
    raise ValueError(f"unknown protocol {protocol!r} (expected one of {PROTOCOLS})")


def folds(data: Triples, protocol: str, split_name: str, n: int | None = None) -> Iterator[Fold]:
    """The first ``n`` (default :data:`FOLDS`) folds of ``protocol`` on the ``split_name`` seeds."""
    for seed in seeds_of(split_name)[: n or FOLDS[protocol]]:
        yield make_fold(data, protocol, seed)
