"""Why a movie was recommended: the user's ratings that contributed most to its ranking score.

The decomposition is the fold-in's own algebra (:meth:`app.scoring.LoadedModel.fold_in`), the way
Hu, Koren & Volinsky (2008, section 5) explain implicit ALS. A user folded in from the ratings of
movies ``R`` is the MAP estimate ``x = mu + M^-1 A^T r~ / s2`` with

* ``A``: one row ``a_j`` per rated movie (``dot``: ``[v_j, 1]``, the movie's factors and the
  user-bias column),
* ``r~_j = y_j - a_j . mu``: the rating on the model's logit scale (``y_j = logit(r_j) - g - b_j``,
  exactly the fold-in's target) minus what the typical user (the prior mean ``mu``) would give it,
* ``M = A^T A / s2 + P``: the prior precision ``P`` plus the data, ``s2`` the noise variance.

So the personal part of the ranking score of movie ``i``, ``v_i . (u - mu_u)``, is a sum over the
rated movies, and rated movie ``j`` contributes

    c_ij = t_i^T M^-1 a_j r~_j / s2        (t_i = [v_i, 0])

``t_i^T M^-1 a_j`` is how similar ``i`` and ``j`` look to this user's ratings (the kernel of the
fold-in), ``r~_j`` is how much more (or less) the user liked ``j`` than expected. A movie is
recommended *because of* the ratings with the largest positive ``c_ij``.

Which users this is exact for:

* ``dot`` users folded in (unknown to the model, or rated since it was trained): exact,
  ``sum_j c_ij = v_i . u - v_i . mu_u`` to float precision.
* ``dot`` users with trained factors: their factors were learned with every other user's, not by
  this projection. The explanation is the projection of their current ratings onto the movie
  factors (the fold-in of the same ratings); it explains the part of the score that their ratings
  account for, not the score to the last digit.
* ``nn`` models: the fold-in is not linear in ``u``; the same formula with ``a_j`` the gradient of
  the movie's logit with respect to the user at the typical user (the fold-in's start and prior)
  is the first-order (Gauss-Newton) decomposition around it. Approximate.

Cost: one ``(k+1)^2`` solve with ``|R|`` right-hand sides and a ``(n, k) x (k, |R|)`` product per
request, a small fraction of a recommendation (bench/explain.py). Nothing here runs unless
``explain=true`` was asked for.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np

from .catalogue import ModelCatalogue
from .scoring import LoadedModel

#: How many rated movies an explanation names at most.
MAX_REASONS = 3

#: Per served ``dot`` model: every movie's design row ``[v, 1]`` in float64, built on first use
#: (one (m, k+1) array; a request then only gathers its rows). Dropped with the model.
_DESIGN: weakref.WeakKeyDictionary[LoadedModel, np.ndarray] = weakref.WeakKeyDictionary()


@dataclass(frozen=True, slots=True)
class Reason:
    """A rated movie that raised a recommended movie's ranking score, and by how much."""

    movie_id: int
    title: str | None
    rating: float  # the user's rating of it
    weight: float  # its contribution to the ranking score (score units), > 0

    def as_dict(self) -> dict[str, object]:
        return {"movie_id": self.movie_id, "title": self.title, "rating": self.rating, "weight": self.weight}


@dataclass(frozen=True)
class Decomposition:
    """Contributions of each rated movie to each target movie's ranking score."""

    rated_rows: np.ndarray  # (r,) model rows of the rated movies the model knows
    ratings: np.ndarray  # (r,) the user's ratings of them
    contributions: np.ndarray  # (t, r) float64: c_ij, rated movie j's part of target i's score
    user_offset: np.ndarray  # (k,) sum_j of the user-factor parts: u - mu_u of the projection
    exact: bool  # True when the contributions sum to the fold-in's personal score exactly (dot)


def _features(model: LoadedModel, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(a, t)``: the fold-in's design rows for ``rows`` and their ranking-score feature rows.

    dot: ``a = [v, 1]``, ``t = [v, 0]`` (the user bias does not enter the ranking score).
    nn: the gradient of the logit w.r.t. the user at the typical user, for both.
    """
    if model.kind == "dot":
        design = _DESIGN.get(model)
        if design is None:  # two threads may both build it on a model's first request: same result
            design = np.hstack([model.movie_factors.astype(np.float64), np.ones((len(model.movie_ids), 1))])
            design.setflags(write=False)
            _DESIGN[model] = design
        a = design[rows]
        t = a.copy()
        t[:, model.k] = 0.0
        return a, t
    _, g = nn_at_typical_user(model, rows)
    return g, g


def nn_at_typical_user(model: LoadedModel, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The logit (without ``g``) of each of ``rows`` for the typical user, and its gradient w.r.t. the user.

    The typical user is the nn fold-in's start and prior (the mean of the trained users); the
    backpropagation is the one of :meth:`LoadedModel.fold_in` (ReLU between layers), in float64.
    """
    k = model.k
    mean_user = model.user_factors.astype(np.float64).mean(axis=0) if model.user_factors.size else np.zeros(k)
    layers = [(w.astype(np.float64), b.astype(np.float64)) for w, b in model.layers]
    w_user, w_movie = layers[0][0][:, :k], layers[0][0][:, k:]
    pre = [model.movie_factors[rows].astype(np.float64) @ w_movie.T + (w_user @ mean_user + layers[0][1])]
    for w, b in layers[1:]:
        pre.append(np.maximum(pre[-1], 0.0) @ w.T + b)
    grad = np.ones((rows.size, 1))
    for i in range(len(layers) - 1, 0, -1):  # d logit / d pre-activation of layer i-1
        grad = (grad @ layers[i][0]) * (pre[i - 1] > 0)
    return pre[-1][:, 0], grad @ w_user


def decompose(model: LoadedModel, movie_rows: np.ndarray, ratings: np.ndarray,
              target_rows: np.ndarray) -> Decomposition:
    """Contribution of each rated movie (``movie_rows``, ``ratings``) to each target row's score.

    ``movie_rows`` must be model rows (the caller drops ratings of movies the model does not know).
    """
    movie_rows = np.asarray(movie_rows, dtype=np.intp)
    target_rows = np.asarray(target_rows, dtype=np.intp)
    ratings = np.asarray(ratings, dtype=np.float64)
    y = model.rating_logit_targets(ratings)
    a, _ = _features(model, movie_rows)
    _, t = _features(model, target_rows)
    if model.kind == "dot":
        y = y - model.movie_bias[movie_rows]
        s2, precision, mu = model.foldin_noise_var, model.prior_precision, model.prior_mean
        residual = y - a @ mu
    else:  # the nn fold-in's objective: sum (f - y)^2 + l2 |u - mu|^2
        s2, precision = 1.0, np.eye(model.k) * model.foldin_l2
        residual = y - nn_at_typical_user(model, movie_rows)[0]
    m = a.T @ a / s2 + precision
    weight = residual / s2
    # M is symmetric, so t_i^T M^-1 a_j = (M^-1 t_i)^T a_j: solve for the few targets (and the
    # user's offset), not for every rated movie -- |R| can be in the hundreds, the targets are n.
    solved = np.linalg.solve(m, np.column_stack([t.T, a.T @ weight]))
    contributions = (solved[:, :-1].T @ a.T) * weight  # (t, r)
    return Decomposition(movie_rows, ratings, contributions, solved[: model.k, -1], exact=model.kind == "dot")


def top_reasons(decomposition: Decomposition, catalogue: ModelCatalogue,
                limit: int = MAX_REASONS) -> list[list[Reason]]:
    """Per target: up to ``limit`` rated movies with the largest positive contributions, largest first.

    A partial sort (``argpartition``, O(|R|) per target) and then only the ``limit`` picks are ordered.
    """
    c = decomposition.contributions
    if c.shape[1] == 0:
        return [[] for _ in range(c.shape[0])]
    rows, ratings = decomposition.rated_rows, decomposition.ratings
    best = np.argpartition(-c, limit - 1, axis=1)[:, :limit] if c.shape[1] > limit else \
        np.broadcast_to(np.arange(c.shape[1]), (c.shape[0], c.shape[1]))
    targets = np.arange(c.shape[0])[:, None]
    weights = c[targets, best]
    order = np.argsort(-weights, axis=1, kind="stable")
    best, weights = best[targets, order], weights[targets, order]
    movie_ids, titles = catalogue.movie_ids, catalogue.titles
    return [[Reason(int(movie_ids[rows[j]]), titles[rows[j]], float(ratings[j]), w)
             for j, w in zip(picks, ws) if w > 0]
            for picks, ws in zip(best.tolist(), weights.tolist(), strict=True)]


def explain_rows(model: LoadedModel, catalogue: ModelCatalogue, rated_movie_ids: np.ndarray,
                 ratings: np.ndarray, target_rows: np.ndarray, limit: int = MAX_REASONS) -> list[list[Reason]]:
    """The reasons for each of ``target_rows`` from the user's ratings (movie ids the model does not know are ignored).

    The ratings are put in model-row order first, so the answer does not depend on the order the
    database returned them in (ties included).
    """
    rows, found = model.movie_rows(rated_movie_ids)
    rows, ratings = rows[found], np.asarray(ratings)[found]
    order = np.argsort(rows, kind="stable")
    return top_reasons(decompose(model, rows[order], ratings[order], target_rows), catalogue, limit)
