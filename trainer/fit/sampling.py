"""The ranking term's data: its positives and their weights, its negatives, and how much of each batch it sees.

One place for what every model kind's ranking term shares (the loss itself is each step's own):
:class:`Ranking` is set up once per fit from the training ratings and :class:`FitParams`, and the
epoch loop draws each epoch's negatives through it, from the fit's one generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from trainer import kernels as K
from trainer.data import Ratings
from trainer.fit.params import FitParams

#: The ranking losses a fit knows (``FitParams.rank_loss``).
RANK_LOSSES = ("softmax", "bpr")


def positive_weights(train: Ratings, params: FitParams) -> np.ndarray:
    """Per-rating weight of its term in the sampled-softmax ranking loss, normalised to mean 1.

    ``rank_positives``:

    * ``all``: every rating is a positive (the model learns what a user watches);
    * ``liked``: only ratings >= ``liked_at`` (what the ranking metrics count as relevant: watched
      *and* liked); a disliked movie is then only ever a sampled negative, so the ranking loss no
      longer pulls ``u·m`` up for movies the rating loss pulls down;
    * ``graded``: ``max(r - liked_at + 1, 0)``: liked movies, 5 stars counting twice a 4;
    * ``centered``: ``max(r - mean_u, 0)``: better than the user's own average.

    ``rank_recency > 0`` multiplies by ``exp(-rank_recency * (1 - q))`` where q is the rating's
    position in its user's history by time (0 oldest, 1 latest). Normalising to mean 1 keeps
    ``rank_weight`` the average weight per rating whatever the choice.
    """
    r = train.rating.astype(np.float64)
    mode = params.rank_positives
    if mode == "all":
        c = np.ones_like(r)
    elif mode == "liked":
        c = (r >= params.liked_at).astype(np.float64)
    elif mode == "graded":
        c = np.maximum(r - params.liked_at + 1.0, 0.0)
    elif mode == "centered":
        n = np.bincount(train.user, minlength=train.n_users)
        mean_u = np.bincount(train.user, r, train.n_users) / np.maximum(n, 1)
        c = np.maximum(r - mean_u[train.user], 0.0)
    else:
        raise ValueError(f"unknown rank_positives {mode!r} (expected all, liked, graded or centered)")
    if params.rank_recency > 0 and len(r):
        counts = np.bincount(train.user, minlength=train.n_users)
        pos = K.history_positions(np.ascontiguousarray(train.user), np.ascontiguousarray(train.rated_at),
                                  np.ascontiguousarray(train.movie), train.n_users)
        q = pos / np.maximum(counts[train.user] - 1, 1)
        c = c * np.exp(-params.rank_recency * (1.0 - q))
    total = c.sum()
    return (c * (len(c) / total) if total > 0 else c).astype(np.float32)


class NegativeSampler:
    """Shared negatives of the sampled softmax: uniform, or drawn from ``q`` with logQ correction.

    With probabilities ``q``, movie j's logit is corrected by ``- log(m q_j)`` (Yi et al. 2019,
    "sampling-bias-corrected" softmax), so the loss still estimates the full softmax over every
    movie while its negatives are the movies most often confused with positives. Uniform sampling
    needs no correction (it is a constant). :meth:`for_ratings` builds the popularity sampler a
    fit uses.
    """

    def __init__(self, n_movies: int, q: torch.Tensor | None = None) -> None:
        self.n = n_movies
        self.q = q
        self.log_correction = None if q is None else torch.log(q * n_movies)
        self.log_correction_np = None if self.log_correction is None else self.log_correction.numpy()

    @classmethod
    def for_ratings(cls, train: Ratings, alpha: float) -> NegativeSampler:
        """Movie j drawn with probability ``q_j ∝ (count_j + 1) ** alpha`` (its ratings in ``train``); 0: uniform."""
        if alpha <= 0:
            return cls(train.n_movies)
        q = torch.from_numpy((np.bincount(train.movie, minlength=train.n_movies) + 1.0) ** alpha)
        return cls(train.n_movies, (q / q.sum()).float())

    def draw(self, rows: int, k: int, gen: torch.Generator) -> torch.Tensor:
        """``(rows, k)`` movie indices."""
        if self.q is None:
            return torch.randint(0, self.n, (rows, k), generator=gen)
        return torch.multinomial(self.q, rows * k, replacement=True, generator=gen).view(rows, k)


def rank_fraction(params: FitParams, n_ratings: int) -> float:
    """The fraction of each batch in the ranking term: ``rank_sample``, or more to reach ``rank_sample_min`` per epoch."""
    if n_ratings <= 0:
        return 1.0
    return float(min(1.0, max(params.rank_sample, params.rank_sample_min / n_ratings)))


def ranked_rows(fraction: float, batch: int) -> int:
    """How many of a batch's (randomly ordered) ratings, the first ones, take part in the ranking term."""
    return max(1, min(batch, round(fraction * batch)))


@dataclass(frozen=True)
class Ranking:
    """The ranking term of one fit: which loss, its weight, its negatives and its positives' weights.

    ``loss`` is ``softmax`` (a row of ``negatives`` shared by each batch, drawn by ``sampler``;
    each positive weighted by ``positive_weights``, None when every weight is 1; only the first
    ``fraction`` of each randomly ordered batch takes part), ``bpr`` (one negative per rating,
    uniform) or ``none`` (``rank_weight`` 0: MSE only).
    """

    loss: str
    weight: float = 0.0
    sampler: NegativeSampler | None = None
    negatives: int = 0
    positive_weights: np.ndarray | None = None
    fraction: float = 1.0

    @classmethod
    def of(cls, train: Ratings, params: FitParams) -> Ranking:
        """The ranking term ``params`` asks for, set up on ``train``."""
        if params.rank_loss not in RANK_LOSSES:
            raise ValueError(f"unknown rank_loss {params.rank_loss!r} (expected softmax or bpr)")
        if params.rank_weight <= 0:
            return cls("none")
        if params.rank_loss == "bpr":
            return cls("bpr", params.rank_weight, NegativeSampler(train.n_movies), 1)
        weights = positive_weights(train, params)
        if bool((weights == 1).all()):
            weights = None  # every rating a positive with weight 1
        return cls("softmax", params.rank_weight, NegativeSampler.for_ratings(train, params.neg_alpha),
                   params.negatives, weights, rank_fraction(params, len(train)))

    def draw(self, gen: torch.Generator, batches: int, n_ratings: int) -> torch.Tensor | None:
        """One epoch's negatives: ``(batches, negatives)`` (softmax), ``(n_ratings,)`` (bpr), or None."""
        if self.sampler is None:
            return None
        if self.loss == "softmax":
            return self.sampler.draw(batches, self.negatives, gen)
        return torch.randint(0, self.sampler.n, (n_ratings,), generator=gen)
