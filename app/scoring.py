"""Numpy scoring of one model version: ratings, rankings, similar movies and fold-in.

Everything here follows the semantics defined in :mod:`movierec.model_format` (``dot`` and
``nn`` models). A :class:`LoadedModel` is built once per version (maps, normalised factors and the
fold-in prior precomputed) and is then read-only, so any number of request threads can share it
and a reload only swaps one reference. It knows model rows, not movies: titles, genres and which
rows may be shown come from :mod:`app.catalogue`, and a recommendation is put together in
:mod:`app.recommendation`. Nothing here imports torch or the trainer.

The interface the rest of the app uses: ``user_row``/``movie_row(s)`` (id -> row),
``trained_user``/``baseline_user``/``fold_in`` (a user's vector), ``predict``/``predict_one``
(ratings), ``top_for_user`` and ``similar`` (the n best rows among the allowed ones). An index
that answers the last two approximately would slot in behind them.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from movierec.item_term import ItemTerm
from movierec.model_format import ModelArtifact

#: The rating scale every answer is clipped to (MovieLens stars).
RATING_MIN = 0.5
RATING_MAX = 5.0

#: Probabilities are clipped to [EPS, 1-EPS] before the logit so a 5-star rating at the top of
#: ``y_range`` does not become an infinite target.
_LOGIT_EPS = 1e-3

#: Noise variance of a rating on the logit scale in the fold-in's MAP estimate. Measured on
#: MovieLens 100K users held out of training, given their first 10 ratings (bench/foldin.py, with
#: the trainer's defaults): 1.0 gives the best RMSE and an NDCG@10 above popularity and most-rated
#: (0.25: 0.349, 0.5: 0.360, 1.0: 0.372, 2.0: 0.380 at a worse RMSE). A manifest
#: ``foldin_noise_var`` overrides it.
DEFAULT_FOLDIN_NOISE_VAR = 1.0

Source = Literal["model", "fold_in", "baseline"]


@dataclass(frozen=True)
class FoldInSystem:
    """The normal equations a ``dot`` fold-in solved, ``gram x = design^T targets / s2 + P mu``.

    Kept (by reference: nothing is copied or computed for it) on the folded-in user so that an
    explanation of the same request (:mod:`app.explain`) decomposes the very same system instead
    of building it again.
    """

    movie_rows: np.ndarray  # (r,) the rated movies' model rows, in the order folded in
    ratings: np.ndarray  # (r,) their ratings
    design: np.ndarray  # (r, k+1) float64: [movie factors, 1]
    targets: np.ndarray  # (r,) float64: the ratings' logits minus the global and movie biases
    gram: np.ndarray  # (k+1, k+1) float64: design^T design / s2 + P


@dataclass(frozen=True)
class UserVector:
    """A user's representation for scoring: factors, bias and where they came from."""

    vec: np.ndarray  # (k,) float32
    bias: float
    source: Source
    system: FoldInSystem | None = None  # dot fold-ins: the system solved (for explanations)

    @property
    def personalized(self) -> bool:
        """False for the baseline (no information about the user)."""
        return self.source != "baseline"


def lookup_rows(sorted_ids: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row of each id in ``sorted_ids`` and whether it was found (rows of misses are 0)."""
    ids = np.asarray(ids, dtype=np.int64)
    if sorted_ids.size == 0:
        return np.zeros(ids.shape, dtype=np.intp), np.zeros(ids.shape, dtype=bool)
    rows = np.searchsorted(sorted_ids, ids)
    rows = np.minimum(rows, sorted_ids.size - 1)
    found = sorted_ids[rows] == ids
    return np.where(found, rows, 0), found


def _lookup_one(sorted_ids: np.ndarray, value: int) -> int | None:
    """Row of one id in ``sorted_ids``, or None (the scalar form of :func:`lookup_rows`, no temporary arrays)."""
    i = int(sorted_ids.searchsorted(value))
    return i if i < sorted_ids.size and int(sorted_ids[i]) == value else None


def _clip_range(rating_scale: list[float] | None) -> tuple[float, float]:
    """The clip range: the manifest's ``rating_scale`` (normalised by the store) intersected with 0.5..5."""
    lo, hi = RATING_MIN, RATING_MAX
    if rating_scale is not None:
        lo, hi = rating_scale
    lo, hi = max(lo, RATING_MIN), min(hi, RATING_MAX)
    if not lo < hi:
        lo, hi = RATING_MIN, RATING_MAX
    return lo, hi


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # Split by sign so large |x| never overflows exp().
    out = np.empty_like(x, dtype=np.float64)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


#: Below this many movies the sampled threshold of :func:`top_candidates` is not worth it.
_SAMPLED_TOP_MIN = 8192
#: Scores sampled for the threshold: enough that the candidate count stays close to its target.
_SAMPLE = 2048


def top_candidates(scores: np.ndarray, n: int, allowed: np.ndarray) -> np.ndarray:
    """Rows that surely include the ``n`` best allowed scores: every allowed row whose score is at
    least a threshold, when at least ``n`` rows pass it (then no row below it can be among the
    best n); else every allowed row.

    The threshold is the score a few times ``n`` from the top of an evenly strided sample of the
    allowed scores, so about that many rows pass: two vectorised passes over the scores instead
    of a partition of all of them (bench/serving.py, /recommend on 60k movies).
    """
    m = scores.size
    if m < _SAMPLED_TOP_MIN:
        return np.flatnonzero(allowed)
    stride = m // _SAMPLE
    sample = scores[::stride][allowed[::stride]]
    rank = 4 * n // stride + 2  # expected rows above the threshold: about 4n + 2 * stride
    if sample.size > rank:
        threshold = np.partition(sample, sample.size - rank)[sample.size - rank]
        passing = np.flatnonzero((scores >= threshold) & allowed)
        if passing.size >= n:
            return passing
    return np.flatnonzero(allowed)


class LoadedModel:
    """A validated model version prepared for serving. Immutable after construction."""

    def __init__(self, artifact: ModelArtifact) -> None:
        t, manifest = artifact.tensors, artifact.manifest  # normalised by the store's loader
        self.version: int = artifact.version
        self.manifest: dict[str, Any] = manifest
        self.kind: str = artifact.kind
        self.user_ids: np.ndarray = np.asarray(t["user_ids"], dtype=np.int64)
        self.movie_ids: np.ndarray = np.asarray(t["movie_ids"], dtype=np.int64)
        self.user_factors: np.ndarray = np.asarray(t["user_factors"], dtype=np.float32)
        self.movie_factors: np.ndarray = np.asarray(t["movie_factors"], dtype=np.float32)
        self.user_bias: np.ndarray = np.asarray(t["user_bias"], dtype=np.float32)
        self.movie_bias: np.ndarray = np.asarray(t["movie_bias"], dtype=np.float32)
        # The movie term of the ranking score (model_format.py; the loader supplies it for older versions).
        self.rank_term: np.ndarray = np.asarray(t["rank_bias"], dtype=np.float32)
        # The item-item term of the ranking score, when the version has one (model_format.py).
        self.item_term: ItemTerm | None = ItemTerm.from_tensors(t, len(t["movie_ids"]))
        self.k: int = int(self.user_factors.shape[1])
        self.global_bias: float = float(manifest["global_bias"])
        self.y_lo, self.y_hi = (float(v) for v in manifest["y_range"])
        self.clip_lo, self.clip_hi = _clip_range(manifest["rating_scale"])
        snapshot = manifest["data_snapshot"] or {}
        max_rated_at = snapshot.get("max_rated_at") if isinstance(snapshot, dict) else None
        self.snapshot_max_rated_at: int | None = int(max_rated_at) if max_rated_at is not None else None

        # nn: layers in numeric order; the first layer is split into its user and movie halves. The
        # movie half applied to every movie (``movie_h1``) is a derived tensor of the version file.
        self.layers: list[tuple[np.ndarray, np.ndarray]] = []
        if self.kind == "nn":
            indices = sorted({int(name.split(".")[1]) for name in t if name.startswith("mlp.")})
            for i in indices:
                self.layers.append((np.asarray(t[f"mlp.{i}.weight"], dtype=np.float32),
                                    np.asarray(t[f"mlp.{i}.bias"], dtype=np.float32)))
            w1 = self.layers[0][0]
            if w1.shape[1] != 2 * self.k or self.layers[-1][0].shape[0] != 1:
                raise ValueError(f"nn layer shapes {[w.shape for w, _ in self.layers]} do not fit k={self.k}")
            self._w1_user = np.ascontiguousarray(w1[:, : self.k])
            self._movie_h1 = np.asarray(t["movie_h1"], dtype=np.float32)  # (m, h1)
            if self._movie_h1.shape[1] != w1.shape[0]:
                raise ValueError(f"movie_h1 has {self._movie_h1.shape[1]} columns, the first layer {w1.shape[0]}")

        # Cosine similarity between movies: the factors' norms (derived, in the version file); the
        # factors themselves are never copied (a normalised copy was a private 256 MB per worker
        # at 1M movies).
        self.movie_norm: np.ndarray = np.asarray(t["movie_norm"], dtype=np.float32)

        # Fold-in prior (see fold_in): from the manifest or the trained users themselves.
        self.foldin_l2, self.foldin_l2_bias = self._foldin_penalties()
        self._mean_user = self.user_factors.mean(axis=0) if len(self.user_ids) else np.zeros(self.k, np.float32)
        self.foldin_noise_var = self._positive(self.manifest.get("foldin_noise_var"), DEFAULT_FOLDIN_NOISE_VAR)
        self.prior_mean, self.prior_precision = self._user_prior()

        for array in (self.user_factors, self.movie_factors, self.movie_norm, self.rank_term):
            array.setflags(write=False)

    # -- set-up ----------------------------------------------------------------------------------

    @staticmethod
    def _positive(value: object, default: float) -> float:
        ok = isinstance(value, (int, float)) and math.isfinite(value) and value > 0
        return float(value) if ok else default  # type: ignore[arg-type]

    def _user_prior(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and precision of the trained users' ``[factors, bias]``: the fold-in's Gaussian prior.

        With a manifest ``foldin_l2`` the prior is the plain ridge one (zero mean, ``1/foldin_l2``
        variance) instead. The covariance is shrunk a little towards its diagonal so that a model
        with few users still gives an invertible, well-conditioned precision.
        """
        d = self.k + 1
        if "foldin_l2" in self.manifest or self.kind != "dot" or len(self.user_ids) < 2:
            precision = np.diag([self.foldin_l2] * self.k + [self.foldin_l2_bias]) / self.foldin_noise_var
            return np.zeros(d), precision
        users = np.hstack([self.user_factors, self.user_bias[:, None]]).astype(np.float64)
        cov = np.atleast_2d(np.cov(users, rowvar=False))
        shrink = min(1.0, d / len(self.user_ids))
        cov = (1 - shrink) * cov + shrink * np.diag(np.diag(cov))
        cov[np.diag_indices(d)] += 1e-6 + 1e-3 * float(np.trace(cov)) / d
        return users.mean(axis=0), np.linalg.inv(cov)

    def _foldin_penalties(self) -> tuple[float, float]:
        given = self.manifest.get("foldin_l2")
        if isinstance(given, (int, float)) and math.isfinite(given) and given > 0:
            return float(given), float(given)
        # MAP estimate with a Gaussian prior matching the trained users: lambda = noise / prior var.
        var_u = float(np.mean(self.user_factors.astype(np.float64) ** 2)) if self.user_factors.size else 0.0
        var_b = float(np.mean(self.user_bias.astype(np.float64) ** 2)) if self.user_bias.size else 0.0
        lam = DEFAULT_FOLDIN_NOISE_VAR / max(var_u, 1e-6)
        lam_b = DEFAULT_FOLDIN_NOISE_VAR / max(var_b, 1e-6)
        return float(np.clip(lam, 1e-3, 1e6)), float(np.clip(lam_b, 1e-3, 1e6))

    # -- lookups ---------------------------------------------------------------------------------

    def user_rows(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Model rows of user ids and a found mask."""
        return lookup_rows(self.user_ids, ids)

    def movie_rows(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Model rows of movie ids and a found mask."""
        return lookup_rows(self.movie_ids, ids)

    def user_row(self, user_id: int) -> int | None:
        return _lookup_one(self.user_ids, user_id)

    def movie_row(self, movie_id: int) -> int | None:
        return _lookup_one(self.movie_ids, movie_id)

    def trained_user(self, row: int) -> UserVector:
        return UserVector(self.user_factors[row], float(self.user_bias[row]), "model")

    def baseline_user(self) -> UserVector:
        """No information: dot -> zero factors and bias (global + movie bias); nn -> the mean user."""
        if self.kind == "nn":
            return UserVector(self._mean_user.astype(np.float32), 0.0, "baseline")
        return UserVector(np.zeros(self.k, dtype=np.float32), 0.0, "baseline")

    # -- ratings ---------------------------------------------------------------------------------

    def _to_rating(self, logit: np.ndarray) -> np.ndarray:
        rating = self.y_lo + (self.y_hi - self.y_lo) * _sigmoid(logit.astype(np.float64))
        return np.clip(rating, self.clip_lo, self.clip_hi)

    def _nn_logit(self, h1: np.ndarray) -> np.ndarray:
        """Finish the MLP from the first layer's pre-activation; returns the logit (without g)."""
        x = h1
        for w, b in self.layers[1:]:
            x = np.maximum(x, 0.0) @ w.T + b
        if len(self.layers) == 1:
            return x[:, 0]
        return x[:, 0]

    def predict(self, user_vecs: np.ndarray, user_bias: np.ndarray, movie_rows: np.ndarray) -> np.ndarray:
        """Predicted ratings for aligned arrays of user vectors (b, k), biases (b,) and movie rows (b,)."""
        if self.kind == "dot":
            logit = (np.einsum("ij,ij->i", user_vecs, self.movie_factors[movie_rows]) + user_bias
                     + self.movie_bias[movie_rows] + self.global_bias)
        else:
            h1 = self._movie_h1[movie_rows] + user_vecs @ self._w1_user.T + self.layers[0][1]
            logit = self._nn_logit(h1) + self.global_bias
        return self._to_rating(logit)

    def predict_one(self, user: UserVector, movie_row: int) -> float:
        """:meth:`predict` for one pair, in scalar arithmetic (the GET /predict path: no temporary arrays)."""
        if self.kind != "dot":
            return float(self.predict(user.vec[None, :], np.array([user.bias]), np.array([movie_row]))[0])
        logit = (float(np.dot(user.vec, self.movie_factors[movie_row])) + user.bias
                 + float(self.movie_bias[movie_row]) + self.global_bias)
        if logit >= 0:
            s = 1.0 / (1.0 + math.exp(-logit))
        else:
            e = math.exp(logit)
            s = e / (1.0 + e)
        rating = self.y_lo + (self.y_hi - self.y_lo) * s
        return min(max(rating, self.clip_lo), self.clip_hi)

    # -- ranking ---------------------------------------------------------------------------------

    def rank_scores(self, user: UserVector, rated_rows: np.ndarray | None = None) -> np.ndarray:
        """Ranking score of every movie for ``user`` (a fresh array the caller may modify).

        ``rated_rows``: the model rows of the movies the user has rated; they bring in the item-item
        term when the version has one (None: no item term).
        """
        if self.kind == "dot":
            scores = self.movie_factors @ user.vec
            scores += self.rank_term  # in place: one pass fewer over the catalogue
        else:
            h1 = self._movie_h1 + (self._w1_user @ user.vec + self.layers[0][1])
            scores = self._nn_logit(h1).astype(np.float32) + self.rank_term  # logit + rank_bias (model_format.py)
        if self.item_term is not None and rated_rows is not None and len(rated_rows):
            scores += self.item_term.scores(rated_rows)
        return scores

    def top_n(self, scores: np.ndarray, n: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows of the ``n`` best allowed scores, best first (ties by row), with their scores. Exact.

        On a large catalogue the candidates are first cut down to the scores above a threshold
        taken from a strided sample (:func:`top_candidates`), so the selection touches a few
        hundred scores instead of partitioning all of them; when fewer than ``n`` allowed scores
        pass it, the whole catalogue is the candidate set.
        """
        if n <= 0:
            return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.float32)
        candidates = top_candidates(scores, n, allowed)
        if candidates.size == 0:
            return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.float32)
        sub = scores[candidates]
        if candidates.size > n:
            part = np.argpartition(-sub, n - 1)[:n]
            keep = sub >= sub[part].min()  # every score tied with the n-th, so ties are broken by row
            candidates, sub = candidates[keep], sub[keep]
        order = np.lexsort((candidates, -sub))[:n]
        return candidates[order], sub[order]

    def top_for_user(self, user: UserVector, n: int, allowed: np.ndarray,
                     rated_rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``n`` allowed rows ranked best for ``user`` (who rated ``rated_rows``), best first, with
        their ranking scores."""
        return self.top_n(self.rank_scores(user, rated_rows), n, allowed)

    @functools.cached_property
    def movie_unit(self) -> np.ndarray:
        """The movie factors scaled to unit length: a private (m, k) array, made on first use only
        (:meth:`similar` divides by :attr:`movie_norm` instead)."""
        unit = self.movie_factors / np.maximum(self.movie_norm, 1e-12)[:, None]
        unit.setflags(write=False)
        return unit

    def similar(self, row: int, n: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The ``n`` allowed rows closest to ``row`` by cosine of the learned factors (itself excluded).

        ``allowed`` is a mask of rows that may be returned; it is modified (``row`` is cleared).
        """
        scores = self.movie_factors @ self.movie_factors[row]
        scores /= np.maximum(self.movie_norm, 1e-12)  # cosine = dot / (|a| |b|); |row| is the same for all
        scores /= max(float(self.movie_norm[row]), 1e-12)
        allowed[row] = False
        return self.top_n(scores, n, allowed)

    # -- fold-in ---------------------------------------------------------------------------------

    def rating_logit_targets(self, ratings: np.ndarray) -> np.ndarray:
        """Ratings mapped onto the logit scale of the model's sigmoid, minus the global bias."""
        p = (np.asarray(ratings, dtype=np.float64) - self.y_lo) / (self.y_hi - self.y_lo)
        p = np.clip(p, _LOGIT_EPS, 1 - _LOGIT_EPS)
        return np.log(p / (1 - p)) - self.global_bias

    def fold_in(self, movie_rows: np.ndarray, ratings: np.ndarray) -> UserVector:
        """Factors and bias of a user from their ratings, with the movie side frozen.

        dot: the MAP estimate of ``x = [u; b_u]`` on the logit scale of the model's own link,
        ``y = logit((r-lo)/(hi-lo)) - g - b_m ~ N(A x, s2)`` with ``A = [movie_factors[rated], 1]``
        and the Gaussian prior ``x ~ N(mu, P^-1)`` fitted to the trained users (their mean and
        covariance): ``(A^T A / s2 + P) x = A^T y / s2 + P mu``, a (k+1)^2 solve, well under a
        millisecond for k=50. Shrinking towards the typical user rather than towards zero is what
        makes ten ratings enough to rank well (bench/foldin.py: ridge towards zero ranks below
        popularity).
        nn: the same objective is not linear in u, so a few hundred Adam steps (numpy backprop
        through the MLP) starting from the mean user, penalised towards it.
        """
        movie_rows = np.asarray(movie_rows, dtype=np.intp)
        if movie_rows.size == 0:
            return self.baseline_user()
        y = self.rating_logit_targets(ratings)
        if self.kind == "dot":
            y = y - self.movie_bias[movie_rows]
            a = np.empty((movie_rows.size, self.k + 1), dtype=np.float64)
            a[:, : self.k] = self.movie_factors[movie_rows]
            a[:, self.k] = 1.0
            s2 = self.foldin_noise_var
            gram = a.T @ a / s2 + self.prior_precision
            x = np.linalg.solve(gram, a.T @ y / s2 + self.prior_precision @ self.prior_mean)
            return UserVector(x[: self.k].astype(np.float32), float(x[self.k]), "fold_in",
                              FoldInSystem(movie_rows, ratings, a, y, gram))
        return UserVector(self._fold_in_nn(movie_rows, y), 0.0, "fold_in")

    def _fold_in_nn(self, movie_rows: np.ndarray, y: np.ndarray, steps: int = 200, lr: float = 0.05) -> np.ndarray:
        prior = self._mean_user.astype(np.float64)
        u = prior.copy()
        lam = self.foldin_l2
        base = self._movie_h1[movie_rows].astype(np.float64) + self.layers[0][1]
        w_user = self._w1_user.astype(np.float64)
        rest = [(w.astype(np.float64), b.astype(np.float64)) for w, b in self.layers[1:]]
        m1 = np.zeros_like(u)
        m2 = np.zeros_like(u)
        for t in range(1, steps + 1):
            pre = [base + w_user @ u]
            x = pre[0]
            for w, b in rest:
                x = np.maximum(x, 0.0) @ w.T + b
                pre.append(x)
            out = pre[-1][:, 0]
            grad_out = 2.0 * (out - y)[:, None]  # d loss / d last pre-activation
            g = grad_out
            for i in range(len(rest) - 1, -1, -1):
                w, _ = rest[i]
                g = (g @ w) * (pre[i] > 0)
            grad_u = w_user.T @ g.sum(axis=0) + 2.0 * lam * (u - prior)
            m1 = 0.9 * m1 + 0.1 * grad_u
            m2 = 0.999 * m2 + 0.001 * grad_u**2
            u -= lr * (m1 / (1 - 0.9**t)) / (np.sqrt(m2 / (1 - 0.999**t)) + 1e-8)
        return u.astype(np.float32)
