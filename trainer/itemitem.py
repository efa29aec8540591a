"""Item-item models from the same ratings: EASE (Steck 2019) and item-kNN cosine.

Both treat the ratings as implicit feedback (``X[u, i] = 1`` when u rated i, whatever the stars)
and score movie ``i`` for user u as ``sum_{j rated by u} S[j, i]``:

* :func:`ease`: ``S = B``, the closed form ``P = (X'X + lambda I)^-1``, ``B = -P / diag(P)`` with a zero
  diagonal (no movie recommends itself). Dense (m, m); for MovieLens 100K (1,682 movies) under a second.
* :func:`cosine_knn`: ``S[j, i] = X'X[j, i] / sqrt(n_j n_i)``, only each row's ``neighbours`` largest kept.

The trainer stores a sparse top-k of ``B``, times a blend weight, as the item term of a ``dot``
model's ranking score (:func:`item_term`, format in :mod:`movierec.item_term`); bench/accuracy.py
reports both as baselines. They need the (m, m) Gram matrix, so a catalogue larger than
:data:`MAX_MOVIES` gets no item term (a log line says so).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from movierec.item_term import ItemTerm, from_dense_topk

if TYPE_CHECKING:
    from trainer.data import Ratings
    from trainer.fit.params import FitParams

#: Above this many movies the dense (m, m) inverse is too costly (m = 20,000: 3.2 GB, minutes); no item term.
MAX_MOVIES = 12_000
#: Users per block when accumulating ``X'X`` (bounds the dense block at ``block * m`` floats).
_BLOCK_USERS = 4096


def gram(user: np.ndarray, movie: np.ndarray, n_users: int, n_movies: int) -> np.ndarray:
    """``X'X`` (float64, (m, m)) of the binary user x movie matrix; duplicate (user, movie) rows count once."""
    g = np.zeros((n_movies, n_movies), dtype=np.float64)
    user = np.asarray(user, dtype=np.int64)
    movie = np.asarray(movie, dtype=np.int64)
    for start in range(0, n_users, _BLOCK_USERS):
        sel = (user >= start) & (user < start + _BLOCK_USERS)
        if not sel.any():
            continue
        x = np.zeros((min(_BLOCK_USERS, n_users - start), n_movies), dtype=np.float32)
        x[user[sel] - start, movie[sel]] = 1.0
        g += (x.T @ x).astype(np.float64)
    return g


def ease(user: np.ndarray, movie: np.ndarray, n_users: int, n_movies: int, lam: float) -> np.ndarray:
    """The EASE weight matrix ``B`` (float32, (m, m), zero diagonal) for L2 strength ``lam`` > 0."""
    if lam <= 0:
        raise ValueError(f"EASE needs lambda > 0, got {lam}")
    g = gram(user, movie, n_users, n_movies)
    g[np.diag_indices(n_movies)] += lam
    p = np.linalg.inv(g)
    b = -p / np.diag(p)[None, :]
    b[np.diag_indices(n_movies)] = 0.0
    return b.astype(np.float32)


def cosine_knn(user: np.ndarray, movie: np.ndarray, n_users: int, n_movies: int,
               neighbours: int = 100) -> np.ndarray:
    """Item-item cosine similarity of the binary matrix, each row keeping its ``neighbours`` largest
    (float32, (m, m), zero diagonal; zeros elsewhere)."""
    g = gram(user, movie, n_users, n_movies)
    norms = np.sqrt(np.maximum(np.diag(g), 1e-12))
    s = (g / norms[:, None] / norms[None, :]).astype(np.float32)
    s[np.diag_indices(n_movies)] = 0.0
    k = min(max(int(neighbours), 0), n_movies)
    if k < n_movies:
        drop = np.argpartition(-s, k, axis=1)[:, k:] if k > 0 else np.broadcast_to(np.arange(n_movies),
                                                                                    (n_movies, n_movies))
        np.put_along_axis(s, drop, 0.0, axis=1)
    return s


def user_item_scores(matrix: np.ndarray, user: np.ndarray, movie: np.ndarray, users: np.ndarray) -> np.ndarray:
    """``X[users] @ matrix`` for the users' rated movies (binary): (len(users), m) float32."""
    m = matrix.shape[0]
    pos = {int(u): i for i, u in enumerate(np.asarray(users).tolist())}
    x = np.zeros((len(pos), m), dtype=np.float32)
    sel = np.isin(user, np.asarray(users))
    x[[pos[int(u)] for u in user[sel]], movie[sel]] = 1.0
    return x @ matrix


def item_term(user: np.ndarray, movie: np.ndarray, n_users: int, n_movies: int, lam: float, neighbours: int,
              blend: float) -> ItemTerm | None:
    """The sparse item term a ``dot`` model stores: EASE's ``B``, top ``neighbours`` per row, times ``blend``.

    None when ``blend`` is 0 or the catalogue is larger than :data:`MAX_MOVIES`.
    """
    if blend == 0 or neighbours <= 0 or n_movies > MAX_MOVIES or n_movies == 0:
        return None
    return from_dense_topk(ease(user, movie, n_users, n_movies, lam), neighbours, blend)


def rated_rows(user: np.ndarray, movie: np.ndarray, n_users: int) -> list[np.ndarray]:
    """Each user's distinct rated movie rows, sorted (index = user row)."""
    width = int(np.max(movie, initial=0)) + 1
    key = np.unique(np.asarray(user, np.int64) * width + np.asarray(movie, np.int64))
    users, movies = key // width, key % width
    ptr = np.concatenate(([0], np.cumsum(np.bincount(users, minlength=n_users))))
    return [movies[ptr[u]:ptr[u + 1]] for u in range(n_users)]


def with_item_term(scorer: Callable[[np.ndarray], np.ndarray], term: ItemTerm | None,
                   user: np.ndarray, movie: np.ndarray, n_users: int) -> Callable[[np.ndarray], np.ndarray]:
    """``scorer`` plus the item term of each user's rated movies (``user``/``movie``: the training
    ratings), the ranking score the API serves; ``scorer`` itself when there is no term."""
    if term is None:
        return scorer
    rated = rated_rows(user, movie, n_users)

    def blended(users: np.ndarray) -> np.ndarray:
        base = np.asarray(scorer(users), dtype=np.float32)
        return base + term.scores_many([rated[int(u)] for u in users])

    return blended


def term_for(train: Ratings, params: FitParams) -> ItemTerm | None:
    """The item term of ``params`` fitted on ``train`` (None when ``params.item_blend`` is 0 or the
    catalogue is too large)."""
    return item_term(train.user, train.movie, train.n_users, train.n_movies, params.item_lambda,
                     params.item_neighbours, params.item_blend)


def term_manifest(params: FitParams, term: ItemTerm | None, n_movies: int) -> dict[str, object] | None:
    """What ``manifest["item_term"]`` records (None: no term, with the reason when there is one)."""
    if term is None:
        if params.item_blend and n_movies > MAX_MOVIES:
            return {"method": "none", "reason": f"{n_movies} movies > {MAX_MOVIES}: EASE too costly"}
        return None
    return {"method": "ease", "lambda": params.item_lambda, "neighbours": params.item_neighbours,
            "blend": params.item_blend, "nnz": term.nnz}
