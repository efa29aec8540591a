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

Models with an item-item term in the ranking score (``score_i += sum_j W[j, i]`` over the rated
movies ``j``, see ``movierec/item_term.py`` where a version has one): :func:`decompose` adds
``W[j, i]`` to ``c_ij`` (that term is a sum over the rated movies by construction, so the full
decomposition stays exact), and :func:`explain_rows`, what the API calls, explains such a version by
the item-item term alone -- its own exact split: the term's stored entries among the rated rows and
the recommended ones (:meth:`movierec.item_term.ItemTerm.hits`), no per-user solve and no
``(n, |R|)`` matrix.

Cost, per request and only when ``explain=true`` was asked for:

* item-term versions: one gather of the rated rows' neighbour lists (``|R| x`` neighbours), a mask
  lookup, and a sort of the few dozen hits;
* ``dot`` users folded in by this request: the fold-in's own design rows and normal matrix
  (:class:`app.scoring.FoldInSystem`) with ``n + 1`` more right-hand sides, one ``(k+1)^2`` solve,
  and an ``(n, d) x (d, |R|)`` product;
* trained ``dot`` users of a version without an item term, and ``nn``: the same built from scratch,
  one solve of size ``min(|R|, k+1)`` (:func:`decompose` takes the dual form when a user has fewer
  ratings than the model has factors);
* then ``limit`` rounds of ``argmax`` (dense) or a ``lexsort`` (sparse) pick the candidates, and
  at most ``n x limit`` of them are rounded and encoded in Python.

``python -m bench.explain`` measures it through HTTP (docs/api.md#because-you-rated has the figures);
``tests/api/test_explain_fast.py`` pins these paths to the straightforward dense computation.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import TypedDict

import numpy as np

from .catalogue import ModelCatalogue
from .scoring import FoldInSystem, LoadedModel, UserVector

#: How many rated movies an explanation names at most.
MAX_REASONS = 3


@dataclass(frozen=True)
class _Prior:
    """What every explanation under one model shares, built on the model's first explanation."""

    precision: np.ndarray  # P: the fold-in prior's precision (d, d)
    covariance: np.ndarray  # C = P^-1, for the dual form
    mean: np.ndarray | None  # dot: the prior mean mu (d,)
    noise_var: float  # s2
    typical_user: np.ndarray  # nn: the fold-in's start and prior, the mean trained user (k,) float64


#: One _Prior per served model, dropped with it (a reload builds the next one on first use).
_PRIORS: weakref.WeakKeyDictionary[LoadedModel, _Prior] = weakref.WeakKeyDictionary()


def _prior(model: LoadedModel) -> _Prior:
    prior = _PRIORS.get(model)
    if prior is None:  # two threads may both build it on a model's first request: the same result
        if model.kind == "dot":
            precision, mean, s2 = model.prior_precision, model.prior_mean, model.foldin_noise_var
        else:  # the nn fold-in's objective: sum (f - y)^2 + l2 |u - mu|^2
            mean, s2 = None, 1.0
            precision = np.eye(model.k) * model.foldin_l2
        typical = model.user_factors.astype(np.float64).mean(axis=0) if model.user_factors.size else \
            np.zeros(model.k)
        prior = _Prior(precision, np.linalg.inv(precision), mean, s2, typical)
        _PRIORS[model] = prior
    return prior


class Reason(TypedDict):
    """A rated movie that raised a recommended movie's ranking score, and by how much.

    A plain dict (the response's own shape): tens of them per request go straight into the JSON.
    """

    movie_id: int
    title: str | None
    weight: float  # its contribution to the ranking score (score units, 4 significant digits), > 0


@dataclass(frozen=True)
class Decomposition:
    """Contributions of each rated movie to each target movie's ranking score."""

    rated_rows: np.ndarray  # (r,) model rows of the rated movies the model knows
    ratings: np.ndarray  # (r,) the user's ratings of them
    contributions: np.ndarray  # (t, r) float64: c_ij, rated movie j's part of target i's score
    user_offset: np.ndarray | None  # (k,) sum_j of the user-factor parts: u - mu_u of the projection
    exact: bool  # True when the contributions sum to the fold-in's personal score exactly (dot)


def _features(model: LoadedModel, rows: np.ndarray, bias: float) -> np.ndarray:
    """One feature row per movie of ``rows``: ``[v, bias]`` for dot (the fold-in's design rows with
    ``bias=1``; the ranking score's, where the user bias does not enter, with ``bias=0``); for nn the
    gradient of the logit w.r.t. the user at the typical user (both roles)."""
    if model.kind == "dot":
        out = np.empty((rows.size, model.k + 1), dtype=np.float64)
        out[:, : model.k] = model.movie_factors[rows]
        out[:, model.k] = bias
        return out
    return nn_at_typical_user(model, rows)[1]


def nn_at_typical_user(model: LoadedModel, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The logit (without ``g``) of each of ``rows`` for the typical user, and its gradient w.r.t. the user.

    The typical user is the nn fold-in's start and prior (the mean of the trained users); the
    backpropagation is the one of :meth:`LoadedModel.fold_in` (ReLU between layers), in float64.
    """
    k = model.k
    mean_user = _prior(model).typical_user
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
              target_rows: np.ndarray, system: FoldInSystem | None = None) -> Decomposition:
    """Contribution of each rated movie (``movie_rows``, ``ratings``) to each target row's score.

    ``movie_rows`` must be model rows (the caller drops ratings of movies the model does not know).
    ``system``: the normal equations a ``dot`` fold-in of exactly these ratings solved in this request
    (:attr:`app.scoring.UserVector.system`); its design rows and matrix are reused instead of
    built again (the primal form, whatever ``|R|``). Ignored when it is of other ratings.
    """
    movie_rows = np.asarray(movie_rows, dtype=np.intp)
    target_rows = np.asarray(target_rows, dtype=np.intp)
    ratings = np.asarray(ratings, dtype=np.float64)
    prior = _prior(model)
    s2 = prior.noise_var
    t = _features(model, target_rows, 0.0)
    if system is not None and prior.mean is not None and _same_ratings(system, movie_rows, ratings):
        a = system.design
        weight = (system.targets - a @ prior.mean) / s2
        rhs = np.empty((a.shape[1], t.shape[0] + 1))
        rhs[:, :-1] = t.T
        rhs[:, -1] = a.T @ weight
        solved = np.linalg.solve(system.gram, rhs)
        contributions = (solved[:, :-1].T @ a.T) * weight  # (t, r)
        offset = solved[:, -1]
    else:
        y = model.rating_logit_targets(ratings)
        if prior.mean is not None:  # dot
            a = _features(model, movie_rows, 1.0)
            residual = y - model.movie_bias[movie_rows] - a @ prior.mean
        else:
            logits, a = nn_at_typical_user(model, movie_rows)
            residual = y - logits
        if movie_rows.size < a.shape[1]:
            # Dual (Woodbury) form, a |R| x |R| solve instead of (k+1) x (k+1) when fewer ratings than
            # factors: t^T M^-1 A^T / s2 = t^T C A^T (s2 I + A C A^T)^-1 with C = P^-1, and
            # M^-1 A^T r~ / s2 = C A^T (s2 I + A C A^T)^-1 r~.
            ac = a @ prior.covariance  # (r, d)
            gram = ac @ a.T
            gram[np.diag_indices_from(gram)] += s2
            solved = np.linalg.solve(gram, np.column_stack([ac @ t.T, residual]))  # (r, t + 1)
            contributions = solved[:, :-1].T * residual
            offset = ac.T @ solved[:, -1]
        else:
            # Primal form. M is symmetric, so t_i^T M^-1 a_j = (M^-1 t_i)^T a_j: solve for the few
            # targets (and the user's offset), not for every rated movie.
            weight = residual / s2
            solved = np.linalg.solve(a.T @ a / s2 + prior.precision, np.column_stack([t.T, a.T @ weight]))
            contributions = (solved[:, :-1].T @ a.T) * weight  # (t, r)
            offset = solved[:, -1]
    item_term = getattr(model, "item_term", None)
    if item_term is not None:  # the item-item part of the ranking score is a sum over rated movies already
        contributions += item_term.contributions(movie_rows, target_rows)
    return Decomposition(movie_rows, ratings, contributions, offset[: model.k], exact=model.kind == "dot")


def _same_ratings(system: FoldInSystem, movie_rows: np.ndarray, ratings: np.ndarray) -> bool:
    """Whether ``system`` was built from exactly these ratings, in this order."""
    return system.movie_rows.shape == movie_rows.shape and system.ratings.shape == ratings.shape \
        and bool((system.movie_rows == movie_rows).all()) and bool((system.ratings == ratings).all())


def top_reasons(decomposition: Decomposition, catalogue: ModelCatalogue,
                limit: int = MAX_REASONS) -> list[list[Reason]]:
    """Per target: up to ``limit`` rated movies with the largest positive contributions, largest first.

    ``limit`` rounds of ``argmax`` along the rated axis pick each target's candidates already in
    order (a fifth of the CPU of ``argpartition`` and a sort on 10 x 200), and :func:`_finish`
    rounds and encodes only those.
    """
    c = decomposition.contributions
    if c.size == 0:  # no rated movie the model knows, or nothing to explain (a filter left no items)
        return [[] for _ in range(c.shape[0])]
    n_targets, n_rated = c.shape
    rounds = min(limit, n_rated)
    left = c.copy() if rounds > 1 else c
    every = np.arange(n_targets)
    best = np.empty((n_targets, rounds), dtype=np.intp)
    weights = np.empty((n_targets, rounds), dtype=np.float64)
    for k in range(rounds):
        pick = left.argmax(axis=1)
        best[:, k], weights[:, k] = pick, left[every, pick]
        if k + 1 < rounds:
            left[every, pick] = -np.inf
    positions = [i for i in range(n_targets) for _ in range(rounds)]
    return _finish(n_targets, positions, decomposition.rated_rows[best.ravel()], weights.ravel().tolist(), catalogue)


def _sparse_reasons(n_targets: int, target_pos: np.ndarray, rated_rows: np.ndarray, weights: np.ndarray,
                    catalogue: ModelCatalogue, limit: int) -> list[list[Reason]]:
    """The reasons of each of ``n_targets`` targets from all their nonzero contributions, as coordinates.

    Contribution ``k``: rated movie ``rated_rows[k]`` adds ``weights[k]`` to target ``target_pos[k]``
    (every contribution not listed is 0). The positive ones are sorted by target, largest first
    (equal weights: the lower model row first) and cut to ``limit`` per target in numpy (a heavy
    rater's few hundred hits never reach the Python loop), then :func:`_finish` rounds and encodes.
    """
    positive = (weights > 0).nonzero()[0]
    if positive.size == 0:
        return [[] for _ in range(n_targets)]
    target_pos, rated_rows, weights = target_pos[positive], rated_rows[positive], weights[positive]
    order = np.lexsort((rated_rows, -weights, target_pos))
    ordered = target_pos[order]
    # Rank within its target: position minus where the target's run starts (``ordered`` is sorted).
    keep = order[np.arange(order.size) - ordered.searchsorted(ordered) < limit]
    return _finish(n_targets, target_pos[keep].tolist(), rated_rows[keep], weights[keep].tolist(), catalogue)


def _finish(n_targets: int, positions: list[int], rated_rows: np.ndarray, weights: list[float],
            catalogue: ModelCatalogue) -> list[list[Reason]]:
    """Reasons from candidates ordered by target and, within one, by weight, largest first.

    Candidate ``k``: rated movie ``rated_rows[k]`` contributes ``weights[k]`` to target
    ``positions[k]``; at most ``limit`` per target, and a target's contributions that are not
    candidates are below them or not positive. Kept: the candidates that stay positive after
    rounding to 4 significant digits of the largest weight (the JSON encoder's float formatting was
    a third of an explanation's cost with all 17). A few dozen candidates: the rounding is cheaper
    in Python than as array operations, and it is numpy's own (``np.round``: scale by an exact power
    of ten, round half to even, scale back), so the weights are the same floats as ``np.round``'s.
    """
    out: list[list[Reason]] = [[] for _ in range(n_targets)]
    top = max(weights, default=0.0)
    if not top > 0:
        return out
    decimals = 3 - math.floor(math.log10(top))
    scale = 10.0 ** abs(decimals)
    kept: list[int] = []
    rounded: list[float] = []
    for k, weight in enumerate(weights):
        if weight > 0:
            weight = round(weight * scale) / scale if decimals >= 0 else round(weight / scale) * scale
            if weight > 0:
                kept.append(k)
                rounded.append(weight)
    picked = rated_rows[kept]
    for k, weight, movie_id, title in zip(kept, rounded, catalogue.movie_ids[picked].tolist(),
                                          catalogue.titles.many(picked), strict=True):
        out[positions[k]].append({"movie_id": movie_id, "title": title, "weight": weight})
    return out


def explain_rows(model: LoadedModel, catalogue: ModelCatalogue, rated_movie_ids: np.ndarray,
                 ratings: np.ndarray, target_rows: np.ndarray, limit: int = MAX_REASONS, *,
                 rated: tuple[np.ndarray, np.ndarray] | None = None,
                 user: UserVector | None = None) -> list[list[Reason]]:
    """The reasons for each of ``target_rows`` from the user's ratings (movie ids the model does not know are ignored).

    ``rated``: ``model.movie_rows(rated_movie_ids)`` when the caller has it already. ``user``: the
    vector the request ranked with; a fold-in's system (:class:`app.scoring.FoldInSystem`) is
    reused rather than built again. Neither changes the answer (the reused system: to float
    precision, tests/api/test_explain_fast.py). Nor does the order of the ratings: item-term
    explanations are the same to the bit (equal weights are ordered by model row), solved ones to
    float precision (the sums run in the order given; the ratings are no longer sorted first,
    which would have cost a copy of the fold-in's system).
    """
    rows, found = model.movie_rows(rated_movie_ids) if rated is None else rated
    ratings = np.asarray(ratings)
    if not found.all():
        rows, ratings = rows[found], ratings[found]
    target_rows = np.asarray(target_rows, dtype=np.int64)
    item_term = getattr(model, "item_term", None)
    if item_term is not None:
        # A version with an item-item term is explained by that term alone: its part of the score is a
        # sum over the rated movies by construction (W[j, i]), so the split is exact for it. The term's
        # stored entries among the rated rows and the targets are all the candidates there are (every
        # other contribution is 0): no per-user solve, no (targets x rated) matrix.
        if getattr(item_term, "has_repeated_columns", True) or rows.size == 0 or target_rows.size == 0:
            contributions = np.asarray(item_term.contributions(rows, target_rows), dtype=np.float64)
            return top_reasons(Decomposition(rows, ratings, contributions, None, exact=False), catalogue, limit)
        target_pos, rated_pos, weights = item_term.hits(rows, target_rows)
        reasons = _sparse_reasons(target_rows.size, target_pos, rows[rated_pos], weights, catalogue, limit)
        targets = target_rows.tolist()
        if len(set(targets)) < len(targets):  # hits() reports a repeated target at its first position only
            first: dict[int, int] = {}
            reasons = [reasons[first.setdefault(target, i)] for i, target in enumerate(targets)]
        return reasons
    system = user.system if user is not None else None
    return top_reasons(decompose(model, rows, ratings, target_rows, system), catalogue, limit)
