"""Rating and ranking metrics, and the baselines they are reported beside.

Rating metrics: RMSE and MAE of predicted vs held-out ratings.

Ranking metrics at K (default 10), per user u with at least one relevant held-out movie:

* candidates: every movie of the model that u has **not** rated in the training part;
* relevant ``R_u``: held-out movies u rated >= 4 (a relevant movie the model does not know
  cannot be recommended but still counts in the denominators);
* ``top``: the K candidates with the highest ranking score (ties broken by ``torch.topk``);
* ``NDCG@K = DCG / IDCG`` with binary gain, ``DCG = sum_{r=1..K} rel(top_r) / log2(r + 1)`` and
  ``IDCG = sum_{r=1..min(|R_u|, K)} 1 / log2(r + 1)``;
* ``Recall@K = |top ∩ R_u| / |R_u|``;  ``HR@K = 1 if top ∩ R_u is non-empty else 0``.

Each is averaged over the users with ``|R_u| >= 1``. Scoring is vectorised: a block of users
times all movies (one matrix product), training movies masked with ``-inf``, ``torch.topk``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from trainer.data import Ratings

RELEVANT_AT = 4.0
K = 10

#: ``scorer(user_indices)`` -> (len(user_indices), n_movies) float32 scores (torch or numpy).
Scorer = Callable[[np.ndarray], "np.ndarray"]


def rmse(predicted: np.ndarray, actual: np.ndarray) -> float:
    """Root mean squared error."""
    diff = np.asarray(predicted, np.float64) - np.asarray(actual, np.float64)
    return float(np.sqrt(np.mean(diff * diff)))


def mae(predicted: np.ndarray, actual: np.ndarray) -> float:
    """Mean absolute error."""
    return float(np.mean(np.abs(np.asarray(predicted, np.float64) - np.asarray(actual, np.float64))))


def rating_metrics(predicted: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    """``{"rmse": ..., "mae": ...}``."""
    return {"rmse": rmse(predicted, actual), "mae": mae(predicted, actual)}


class BiasBaseline:
    """Global mean plus damped user and movie biases, fitted by a few alternating passes.

    ``b_m = sum(r - mu - b_u) / (count_m + reg)`` and likewise for users: the classic baseline
    predictor (Koren 2008), the reference every latent-factor model must beat on RMSE.
    """

    def __init__(self, reg: float = 5.0, passes: int = 5, lo: float = 0.5, hi: float = 5.0) -> None:
        self.reg, self.passes, self.lo, self.hi = reg, passes, lo, hi

    def fit(self, train: Ratings) -> BiasBaseline:
        r = train.rating.astype(np.float64)
        self.mu = float(r.mean()) if len(r) else 0.0
        self.bu = np.zeros(train.n_users)
        self.bm = np.zeros(train.n_movies)
        cu = np.bincount(train.user, minlength=train.n_users)
        cm = np.bincount(train.movie, minlength=train.n_movies)
        for _ in range(self.passes):
            self.bm = np.bincount(train.movie, r - self.mu - self.bu[train.user], train.n_movies) / (cm + self.reg)
            self.bu = np.bincount(train.user, r - self.mu - self.bm[train.movie], train.n_users) / (cu + self.reg)
        return self

    def predict(self, user: np.ndarray, movie: np.ndarray) -> np.ndarray:
        return np.clip(self.mu + self.bu[user] + self.bm[movie], self.lo, self.hi)


def popularity_scores(train: Ratings) -> np.ndarray:
    """Number of training ratings of each movie: the popularity ranking baseline."""
    return np.bincount(train.movie, minlength=train.n_movies).astype(np.float32)


def ranking_metrics(
    train: Ratings, test: Ratings, scorer: Scorer, k: int = K, relevant_at: float = RELEVANT_AT,
    block_cells: int = 1 << 23,
) -> dict[str, float]:
    """NDCG@k, Recall@k and HR@k (see the module docstring) of ``scorer`` on ``test``.

    ``train`` and ``test`` share id maps. ``block_cells`` bounds the users x movies block scored
    at once (memory: 4 bytes a cell, plus a boolean relevance block).
    """
    import torch

    m = train.n_movies
    rel = test.rating >= relevant_at
    rel_user, rel_movie = test.user[rel], test.movie[rel]
    n_rel = np.bincount(rel_user, minlength=train.n_users)
    users = np.flatnonzero(n_rel > 0)
    if len(users) == 0 or m == 0:
        return {f"ndcg@{k}": 0.0, f"recall@{k}": 0.0, f"hr@{k}": 0.0, "users": 0}
    # CSR views of the training and relevant sets per user.
    tr_order = np.argsort(train.user, kind="stable")
    tr_user, tr_movie = train.user[tr_order], train.movie[tr_order]
    tr_ptr = np.concatenate(([0], np.cumsum(np.bincount(tr_user, minlength=train.n_users))))
    rl_order = np.argsort(rel_user, kind="stable")
    rl_movie = rel_movie[rl_order]
    rl_ptr = np.concatenate(([0], np.cumsum(n_rel)))
    kk = min(k, m)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.concatenate(([0.0], np.cumsum(discounts)))  # ideal[j] = IDCG with j relevant items
    block = max(1, block_cells // max(m, 1))
    ndcg = recall = hits = 0.0
    for start in range(0, len(users), block):
        ub = users[start:start + block]
        scores = torch.from_numpy(np.array(scorer(ub), dtype=np.float32))  # a writable copy
        rows, cols = _gather_csr(ub, tr_ptr, tr_movie)
        scores[torch.from_numpy(rows), torch.from_numpy(cols)] = float("-inf")
        top = torch.topk(scores, kk, dim=1).indices.numpy()
        relevant = np.zeros((len(ub), m), dtype=bool)
        rows, cols = _gather_csr(ub, rl_ptr, rl_movie)
        relevant[rows, cols] = True
        got = np.take_along_axis(relevant, top, axis=1)  # (b, kk) binary gains in rank order
        n_r = n_rel[ub]
        dcg = got @ discounts[:kk]
        ndcg += float(np.sum(dcg / ideal[np.minimum(n_r, k)]))
        n_hit = got.sum(axis=1)
        recall += float(np.sum(n_hit / n_r))
        hits += float(np.sum(n_hit > 0))
    n = len(users)
    return {f"ndcg@{k}": ndcg / n, f"recall@{k}": recall / n, f"hr@{k}": hits / n, "users": int(n)}


def _gather_csr(users: np.ndarray, ptr: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row in block, value) pairs of the CSR rows ``users``, vectorised."""
    starts, ends = ptr[users], ptr[users + 1]
    lengths = ends - starts
    rows = np.repeat(np.arange(len(users)), lengths)
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return rows, values[np.repeat(starts, lengths) + offsets].astype(np.int64)
