"""Training loops.

``dot`` uses a hand-fused loop: the forward pass, the gradient of the loss with respect to the
gathered rows (written out by hand, in the compiled kernels of :mod:`trainer.kernels`) and a
*row-sparse* Adam update of only the rows a batch touched. Why:

* autograd on embedding lookups costs a dense gradient the size of each table per step (or a
  sparse tensor that then has to be coalesced), and dense Adam/AdamW then reads and writes every
  row of every table each step. With 25M ratings (~160K users, ~60K movies) that dense work
  dominates and is proportional to table size, not batch size;
* written as torch ops, even the hand-derived step was ~40 small passes over memory per batch
  plus a sort per table for the sparse update: 0.3-0.5M ratings/s on 2 cores, and 2 threads
  were slower than 1. Compiled row-by-row kernels (numba), the three matrix products of the
  sampled softmax left to BLAS, tables in huge pages and prefetched rows made the same
  arithmetic 2.2-2.8M ratings/s at 5M-25M ratings (bench/results/speed.md); the gradients are
  checked against autograd in tests/trainer/test_kernels.py.

The loss is ``MSE(rating) + bpr_weight * ranking``. The ranking term (``rank_loss="softmax"``,
the default) is a sampled softmax: each training rating (u, i) is a positive, scored against
``negatives`` movies shared by the whole batch, with logits ``x = a (u·m) + rank_bias[m]``;
``rank_loss="bpr"`` is one-negative BPR (Rendle et al. 2009). The embeddings are shared between
both terms, so ``/recommend`` ranks by the learned factors, ``u·m + rank_bias[m] / a`` (what is
exported as ``rank_bias``); the per-movie ``rank_bias`` absorbs how often a movie is watched,
which ``movie_bias`` (how well it is rated) must not. The defaults (``bpr_weight = 0.45``,
128 shared negatives) rest on three choices, each measured on ML-100K with
``bench/accuracy_dot.py`` (RMSE on a random 10 %, NDCG@10 on each user's latest 20 %; the
previous default, learned a / uniform negatives / weight 0.25, gave 0.895 / 0.131, and weight 1
gave 0.920 / 0.150):

* **fixed scale** ``a = rank_scale = 2`` (the inverse temperature of the softmax, a
  hyper-parameter as in Yi et al. 2019). A *learned* a grows (to 4-10) to sharpen the softmax,
  and since ``dL/d(u·m) = a (p - y)`` that raises the ranking gradients against the rating
  ones: at weight 0.35 with popularity negatives, learned a (~5) gave RMSE 0.902, a = 10 0.924,
  a = 2 0.890. With a fixed at 2 the weight can be about doubled for the same RMSE;
* **popularity-proportional negatives with logQ correction** (``neg_alpha = 0.5``: movie j drawn
  with probability ∝ ``(count_j + 1)^0.5``, its logit lowered by ``log(m q_j)``, Yi et al.
  2019), so the loss still estimates the full softmax while its negatives are the movies most
  often confused with positives: NDCG@10 0.146 -> 0.158 at weight 0.5 (alpha 1 overshoots: 0.092);
* **recency-weighted positives** (``rank_recency = 1.5``): each rating's ranking term weighted by
  ``exp(-1.5 (1 - q))``, q its position in its user's history by time (0 oldest, 1 latest),
  weights normalised to mean 1. "What will they watch next" is closer to what they watched
  last, which is what the latest-20 % protocol measures: at a = 2, weight 0.5, NDCG@10
  0.148 -> 0.161 for +0.0004 RMSE (recency 1).

Defaults, 3 seeds: RMSE 0.8931 (0.8927-0.8936), NDCG@10 0.161 (0.161-0.162).

**Ranking on part of each batch at scale** (``rank_sample = 0.25``, ``rank_sample_min = 1M``):
the sampled softmax costs ~25x the rating term per rating (three (batch x 128 x k) products),
so once an epoch has more than 1M ratings only a quarter of each (randomly ordered) batch
takes part, each counting 4x; below that every rating does, so ML-100K and ML-1M-sized data
train exactly as before. On ML-100K, where ranking data is scarcest, ranking only a half or a
quarter of every batch gave NDCG@10 0.160 / 0.157 (RMSE 0.892 / 0.892; 2 seeds), against 0.161
/ 0.893 for every rating; at 5M ratings a quarter is still 1.25M ranked ratings per epoch, 14x
ML-100K's whole training set. At 5M ratings on 2 cores an epoch takes ~1.9 s with a quarter
and ~3.9 s with every rating.

Tried and not kept (single seed, learned a unless said):

* positives restricted to liked ratings (>= 4), or weighted by ``r - 3`` or ``(r - mean_u)+``
  (``rank_positives``): worse on both metrics than every rating as a positive at the same weight
  (0.5: liked 0.910 / 0.135, graded 0.907 / 0.139, centered 0.911 / 0.134 vs all 0.906 / 0.146).
  Which movies a user watches, not only which they liked, is what helps both: the ranking term
  at a small weight even lowers RMSE (0.905 without it, 0.895 at 0.25), much as SVD++'s implicit
  feedback does;
* masking each user's own rated movies out of the negatives: NDCG 0.159 but RMSE 0.937;
* ranking gradients to the user factors only / the movie factors only: NDCG 0.091 / 0.115;
* 128 factors (0.918 / 0.156 vs 0.912 / 0.158 with 64), 30 epochs (0.924 / 0.155), weight decay
  0.05 or 0.15 (worse RMSE), 256 negatives; a lower learning rate or 15 epochs only move along
  the same trade-off (better RMSE, worse NDCG).

Regularisation is L2 on the rows a sample touches, weighted per occurrence (the classic
matrix-factorisation penalty): popular movies are pulled by many ratings and many penalties.
The learning rate follows a one-cycle schedule (warm up 25 %, cosine down), as fastai does.

``nn`` uses autograd with AdamW (its MLP is dense anyway) and the same loss: MSE plus the sampled
softmax over shared popularity negatives (logQ-corrected, recency-weighted positives) on
``logit + rank_bias``, the negatives' logits from :meth:`EmbeddingNN.negative_logits`. Its
defaults (15 epochs, lr 0.01, weight 0.5, 64 negatives, a quarter of each batch ranked) on
ML-100K, seed 42: RMSE 0.934, NDCG@10 0.107, 8 s a fit on 2 cores, where the previous one-negative
BPR on the bare logit (8 epochs, lr 0.003) gave 0.940 / 0.057, below popularity (0.090). Every
row with 128 negatives: 0.939 / 0.111 but ~120 s a fit (each pair runs the MLP); a quarter with
128: 0.937 / 0.111 at 12 s. Weight 1 reached NDCG 0.139 at RMSE 0.984; a rank scale of 2 or no
rank_bias ranked worse (0.094 / 0.073 at 8 epochs).

Determinism: all randomness (init, permutation, negatives) comes from one ``torch.Generator``
seeded with the training seed; the compiled kernels sum each row's gradients in batch order
whatever the thread count, and the BLAS products (and so the whole fit) are deterministic for a
fixed thread count.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numba
import numpy as np
import torch

from trainer import DivergedError
from trainer import hugepages
from trainer import kernels as K
from trainer.data import Ratings
from trainer.metrics import rmse
from trainer.models import DEFAULT_Y_RANGE, DotProductBias, EmbeddingNN, global_logit


@dataclass
class FitParams:
    """Hyper-parameters of one training run (recorded in the manifest)."""

    model: str = "dot"
    factors: int = 64
    epochs: int = 20
    lr: float = 0.01
    wd: float = 0.1
    batch_size: int = 4096
    bpr_weight: float = 0.45
    rank_loss: str = "softmax"
    negatives: int = 128
    #: Which ratings are positives of the ranking loss and with what weight (see :func:`positive_weights`).
    rank_positives: str = "all"
    #: Ratings at or above this are "liked" (``rank_positives="liked"``); the ranking metrics' threshold.
    liked_at: float = 4.0
    #: User-relative recency of positives: weight ``exp(-rank_recency * (1 - q))``, q = 0 oldest .. 1 latest.
    rank_recency: float = 1.5
    #: Negatives drawn with probability proportional to ``(count + 1) ** neg_alpha`` (0: uniform), logQ-corrected.
    neg_alpha: float = 0.5
    #: Scale a of the ranking logits ``a (u·m) + rank_bias`` (inverse softmax temperature); <= 0: learned.
    rank_scale: float = 2.0
    #: Fraction of each batch's ratings that take part in the ranking term (it costs ~25x the rating term) ...
    rank_sample: float = 0.25
    #: ... but at least this many ratings per epoch: small data sets (ML-100K, 1M) use every rating.
    rank_sample_min: int = 1_000_000
    seed: int = 42
    y_range: tuple[float, float] = DEFAULT_Y_RANGE
    hidden: tuple[int, ...] = (100,)
    init_std: float = 0.01

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass
class History:
    """Per-epoch training loss (MSE and BPR parts) and validation RMSE (when a validation set is given)."""

    loss: list[float] = field(default_factory=list)
    bpr: list[float] = field(default_factory=list)
    valid_rmse: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    #: Threads the fit started with (see :func:`set_threads`).
    threads: int = 1
    #: The step after which it went on with one thread (:class:`ThreadGovernor`), if it did.
    threads_dropped_at_step: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: ``progress(epoch, n_epochs, loss, valid_rmse_or_None)`` called after every epoch.
Progress = Callable[[int, int, float, float | None], None]


def defaults_for(kind: str) -> FitParams:
    """The default parameters of each model kind (what ``movierec train`` uses without options)."""
    if kind == "dot":
        return FitParams(model="dot")
    if kind == "nn":
        # Every (rating, negative) pair runs the MLP, so the ranking term takes 64 negatives and a
        # quarter of each batch at any data size (see the module docstring).
        return FitParams(model="nn", factors=32, epochs=15, lr=0.01, wd=0.01, batch_size=1024, bpr_weight=0.5,
                         hidden=(64,), negatives=64, rank_sample=0.25, rank_sample_min=0)
    raise ValueError(f"unknown model kind {kind!r} (expected dot or nn)")


def default_threads() -> int:
    """The cores this process may use, less those that other work keeps busy (the 1-minute load average).

    The training step is a chain of short parallel loops that each wait for their slowest
    thread. A thread that shares its core with another busy process is descheduled for whole
    time slices, and every loop waits for it: at 5M ratings, with one busy process beside it on
    our 2-core machine, 2 threads trained at 0.23M ratings/s and 1 thread at 1.9M. Idle cores
    are what make more threads pay.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(cpus, cpus - int(busy + 0.5)))


def set_threads() -> int:
    """Set torch's and numba's thread counts: ``MOVIEREC_TRAIN_THREADS`` or :func:`default_threads`. Returns it."""
    wanted = os.environ.get("MOVIEREC_TRAIN_THREADS", "")
    n = int(wanted) if wanted.isdigit() and int(wanted) > 0 else default_threads()
    torch.set_num_threads(n)
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    return n


class ThreadGovernor:
    """Falls back to one thread when the step rate collapses, as when another process takes a core.

    The thread count is chosen when a fit starts (:func:`default_threads`), but a machine can get
    busy later, and then two threads are several times slower than one (see there). Steps are
    timed in windows of ``window`` steps within an epoch; a window that runs at less than
    1/``collapse`` of the best window's rate while more than one thread trains switches the
    rest of the fit to one thread. It never switches back: a fit that fell back once is on a
    busy machine. Small data sets (fewer steps an epoch than a window) are never judged.
    """

    def __init__(self, threads: int, window: int = 128, collapse: float = 3.0,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.threads, self.window, self.collapse, self.clock = threads, window, collapse, clock
        self.best = 0.0
        self.count = 0
        self.since = clock()
        #: The step (counted from 1 over the whole fit) after which training went to one thread.
        self.dropped_at: int | None = None

    def restart(self) -> None:
        """Start a new window (at an epoch's start: the shuffle between epochs is not a step)."""
        self.count = 0
        self.since = self.clock()

    def step(self, t: int) -> None:
        """Count step ``t``; judge the window when it is full."""
        self.count += 1
        if self.count < self.window:
            return
        now = self.clock()
        rate = self.count / max(now - self.since, 1e-9)
        self.count, self.since = 0, now
        if rate > self.best:
            self.best = rate
        elif self.threads > 1 and rate * self.collapse < self.best:
            self.threads = 1
            self.dropped_at = t
            torch.set_num_threads(1)
            numba.set_num_threads(1)


def one_cycle(step: int, total: int, lr: float, warm: float = 0.25, div: float = 25.0, final_div: float = 1e4) -> float:
    """fastai-style one-cycle: cosine from lr/div up to lr over ``warm`` of the steps, then cosine to lr/final_div."""
    t = step / max(total - 1, 1)
    if t < warm:
        p = t / warm
        start = lr / div
        return start + (lr - start) * (1 - math.cos(math.pi * p)) / 2
    p = (t - warm) / (1 - warm)
    end = lr / final_div
    return end + (lr - end) * (1 + math.cos(math.pi * p)) / 2


def make_model(params: FitParams, n_users: int, n_movies: int, mean_rating: float,
               generator: torch.Generator) -> DotProductBias | EmbeddingNN:
    """A freshly initialised model of ``params.model`` kind."""
    g = global_logit(mean_rating, params.y_range)
    if params.model == "dot":
        return DotProductBias(n_users, n_movies, params.factors, params.y_range, g, params.init_std, generator)
    if params.model == "nn":
        return EmbeddingNN(n_users, n_movies, params.factors, params.hidden, params.y_range, g,
                           init_std=params.init_std, generator=generator)
    raise ValueError(f"unknown model kind {params.model!r} (expected dot or nn)")


def fit(train: Ratings, params: FitParams, valid: Ratings | None = None,
        progress: Progress | None = None) -> tuple[DotProductBias | EmbeddingNN, History]:
    """Train a model of ``params.model`` kind on ``train``; return it and its per-epoch history.

    Raises DivergedError when the loss becomes NaN or infinite (nothing should be published).
    """
    threads = set_threads()
    gen = torch.Generator().manual_seed(params.seed)
    mean = float(train.rating.mean()) if len(train) else 3.5
    model = make_model(params, train.n_users, train.n_movies, mean, gen)
    if params.model == "dot":
        governor = ThreadGovernor(threads)
        history = _fit_dot(model, train, params, valid, gen, progress, governor)  # type: ignore[arg-type]
        history.threads_dropped_at_step = governor.dropped_at
    else:
        history = _fit_nn(model, train, params, valid, gen, progress)  # type: ignore[arg-type]
    history.threads = threads
    return model, history


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
    ``bpr_weight`` the average weight per rating whatever the choice.
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
    """Shared negatives of the sampled softmax: uniform, or popularity-proportional with logQ correction.

    With ``neg_alpha = a > 0`` movie j is drawn with probability ``q_j ∝ (count_j + 1) ** a`` and its
    logit is corrected by ``- log(m q_j)`` (Yi et al. 2019, "sampling-bias-corrected" softmax), so
    the loss still estimates the full softmax over every movie while its negatives are the movies
    most often confused with positives. Uniform sampling needs no correction (it is a constant).
    """

    def __init__(self, train: Ratings, alpha: float) -> None:
        self.n = train.n_movies
        self.q: torch.Tensor | None = None
        self.log_correction: torch.Tensor | None = None
        if alpha > 0:
            q = torch.from_numpy((np.bincount(train.movie, minlength=self.n) + 1.0) ** alpha)
            q = (q / q.sum()).float()
            self.q = q
            self.log_correction = torch.log(q * self.n)
        self.log_correction_np = None if self.log_correction is None else self.log_correction.numpy()

    def draw(self, rows: int, k: int, gen: torch.Generator) -> torch.Tensor:
        if self.q is None:
            return torch.randint(0, self.n, (rows, k), generator=gen)
        return torch.multinomial(self.q, rows * k, replacement=True, generator=gen).view(rows, k)


def negative_sampler(train: Ratings, params: FitParams) -> NegativeSampler:
    return NegativeSampler(train, params.neg_alpha)


def rank_fraction(params: FitParams, n_ratings: int) -> float:
    """The fraction of each batch in the ranking term: ``rank_sample``, or more to reach ``rank_sample_min`` per epoch."""
    if n_ratings <= 0:
        return 1.0
    return float(min(1.0, max(params.rank_sample, params.rank_sample_min / n_ratings)))


def ranked_rows(fraction: float, batch: int) -> int:
    """How many of a batch's (randomly ordered) ratings, the first ones, take part in the ranking term."""
    return max(1, min(batch, round(fraction * batch)))


class _RowSet:
    """The distinct rows of one table that a batch touched (:func:`trainer.kernels.touched_rows`)."""

    def __init__(self, n_rows: int, capacity: int) -> None:
        self.slot = hugepages.zeros((n_rows,), np.int64)
        self.slot.fill(-1)
        self.rows = np.empty(capacity, np.int64)
        self.first = np.empty(capacity, np.int64)
        self.inverse = np.empty(capacity, np.int64)
        self.n = self.count = 0

    def find(self, index: np.ndarray) -> _RowSet:
        self.count = index.shape[0]
        self.n = K.touched_rows(index, self.slot, self.rows, self.first, self.inverse[:self.count])
        return self


class _LazyAdam:
    """Adam on the rows of a table that a batch touched ("lazy Adam"), with per-occurrence L2.

    Rows not in the batch keep their moments untouched, so a step costs O(rows touched), not
    O(table). Gradients of a row that occurs several times in a batch are summed first, which
    is exact (:func:`trainer.kernels.adam_rows`).
    """

    def __init__(self, table: np.ndarray, capacity: int, betas: tuple[float, float] = (0.9, 0.99),
                 eps: float = 1e-8) -> None:
        self.table = table
        self.m1 = hugepages.zeros(table.shape)
        self.m2 = hugepages.zeros(table.shape)
        self.m1.fill(0.0)  # touch the pages now (set-up), not during the first epoch
        self.m2.fill(0.0)
        self.acc = np.empty((capacity, table.shape[1]), np.float32)
        self.b1, self.b2, self.eps = betas[0], betas[1], eps

    def step(self, rows: _RowSet, grad: np.ndarray, lr: float, t: int, tail_from: int | None = None,
             tail_limit: int = 0) -> None:
        """Columns from ``tail_from`` on only in rows that the first ``tail_limit`` occurrences touched."""
        c1, c2 = 1 - self.b1 ** t, 1 - self.b2 ** t
        width = self.table.shape[1]
        K.adam_rows(self.table, self.m1, self.m2, grad, self.acc, rows.rows, rows.n, rows.first,
                    rows.inverse[:rows.count], rows.slot, _f32(self.b1), _f32(self.b2), _f32(lr / c1), _f32(c2),
                    _f32(self.eps), width if tail_from is None else tail_from,
                    rows.count if tail_from is None else tail_limit, numba.get_num_threads())


class _ScalarAdam:
    """Adam for one scalar parameter (the log of the ranking scale)."""

    def __init__(self, value: float, betas: tuple[float, float] = (0.9, 0.99), eps: float = 1e-8,
                 learn: bool = True) -> None:
        self.value, self.m, self.v, self.learn = value, 0.0, 0.0, learn
        self.b1, self.b2, self.eps = betas[0], betas[1], eps

    def step(self, grad: float, lr: float, t: int) -> None:
        self.m = self.b1 * self.m + (1 - self.b1) * grad
        self.v = self.b2 * self.v + (1 - self.b2) * grad * grad
        self.value -= lr * (self.m / (1 - self.b1 ** t)) / (math.sqrt(self.v / (1 - self.b2 ** t)) + self.eps)


_f32 = np.float32


class _DotStep:
    """One minibatch of the ``dot`` loop: forward, hand-derived gradients of the mean loss, lazy Adam.

    The loss is ``MSE + w * ranking`` with L2 ``wd |row|^2`` per occurrence (gradients in
    :mod:`trainer.kernels`). Ranking is the sampled softmax over ``[positive, shared negatives]``
    (``softmax``), one-negative BPR (``bpr``) or nothing (``w = 0``). Buffers are allocated
    once for the largest batch and sliced for the last one.

    While training, the model's five tensors are views of two tables in huge pages (see
    :mod:`trainer.hugepages`), a user row ``[factors | bias]`` and a movie row
    ``[factors | rank bias | bias]``; :meth:`release` gives the model contiguous tensors back.
    """

    def __init__(self, model: DotProductBias, params: FitParams, sampler: NegativeSampler | None,
                 rank_fraction: float = 1.0) -> None:
        self.params, self.sampler = params, sampler
        self.rank_fraction = rank_fraction
        b, k = params.batch_size, model.factors
        self.k = k
        self.users = hugepages.zeros((model.user_factors.shape[0], k + 1))
        self.movies = hugepages.zeros((model.movie_factors.shape[0], k + 2))
        self._views = ((model.user_factors, self.users[:, :k]), (model.user_bias, self.users[:, k + K.USER_BIAS]),
                       (model.movie_factors, self.movies[:, :k]),
                       (model.rank_bias, self.movies[:, k + K.RANK_BIAS]),
                       (model.movie_bias, self.movies[:, k + K.MOVIE_BIAS]))
        for param, view in self._views:
            view[...] = param.data.numpy()
            param.data = torch.from_numpy(view)  # the model sees training progress (validation each epoch)
        self.ranking = params.rank_loss if params.bpr_weight > 0 else "none"
        extra = {"softmax": params.negatives, "bpr": b, "none": 0}[self.ranking]
        self.opt_users = _LazyAdam(self.users, b)
        self.opt_movies = _LazyAdam(self.movies, b + extra)
        self.user_rows = _RowSet(self.users.shape[0], b)
        self.movie_rows = _RowSet(self.movies.shape[0], b + extra)
        self.qu, self.qm = np.empty((b, k), np.float32), np.empty((b, k), np.float32)
        self.gu = np.empty((b, k + 1), np.float32)
        self.gm_all = np.zeros((b + extra, k + 2), np.float32)  # [positives; negatives]: one update for both
        self.m_all = np.empty(b + extra, np.int32)
        self.dot, self.x_pos, self.top = (np.empty(b, np.float32) for _ in range(3))
        self.x = np.empty((b, params.negatives if self.ranking == "softmax" else 0), np.float32)
        self.ones = np.ones(b, np.float32)
        lo, hi = model.y_range
        self.lo, self.span, self.g0 = _f32(lo), _f32(hi - lo), _f32(model.global_bias)

    def release(self) -> None:
        """Give the model contiguous tensors of its own (the training tables can then be freed)."""
        for param, view in self._views:
            param.data = torch.from_numpy(np.ascontiguousarray(view))

    def __call__(self, u: np.ndarray, m: np.ndarray, y: np.ndarray, j: np.ndarray | None, c: np.ndarray | None,
                 lr: float, t: int, scale: _ScalarAdam) -> tuple[float, float]:
        b, k = u.shape[0], self.k
        w, wd = self.params.bpr_weight, self.params.wd
        reg = _f32(2 * wd / b)
        qu, qm, gu, gm = self.qu[:b], self.qm[:b], self.gu[:b], self.gm_all[:b]
        sq = K.rating_rows(self.users, self.movies, u, m, y, self.lo, self.span, self.g0, reg, _f32(1 / b),
                           qu, qm, gu, gm, self.dot[:b])
        rank = 0.0
        n_extra = 0
        if self.ranking == "softmax":
            n_extra = j.shape[0]
            rank = self._softmax(m, j, self.ones[:b] if c is None else c, b, w, lr, t, scale)
        elif self.ranking == "bpr":
            n_extra = b
            rank = K.bpr_rows(self.movies, m, j, _f32(w / b), reg, qu, qm, gu, gm, self.gm_all[b:2 * b])
        self.opt_users.step(self.user_rows.find(u), gu, lr, t)
        self.m_all[:b] = m
        if n_extra:
            self.m_all[b:b + n_extra] = j
        end = b + n_extra
        rows = self.movie_rows.find(self.m_all[:end])
        # The movie bias learns from the positives only (the first b occurrences).
        self.opt_movies.step(rows, self.gm_all[:end], lr, t, tail_from=k + K.MOVIE_BIAS, tail_limit=b)
        return sq, rank

    def _softmax(self, m: np.ndarray, j: np.ndarray, c: np.ndarray, b: int, w: float, lr: float, t: int,
                 scale: _ScalarAdam) -> float:
        # Logits a (u·m) + rank_bias[m], minus log(m q_j) for popularity-sampled negatives;
        # ranking by them is ranking by u·m + rank_bias/a, which is what is exported.
        k = self.k
        a = math.exp(float(scale.value))
        n = j.shape[0]
        pj = torch.from_numpy(self.movies[j, :k])
        neg_bias = self.movies[j, k + K.RANK_BIAS]
        if self.sampler is not None and self.sampler.log_correction_np is not None:
            neg_bias -= self.sampler.log_correction_np[j]
        # Only the first r ratings of the (randomly ordered) batch take part, each counting b/r times.
        r = ranked_rows(self.rank_fraction, b)
        self.gm_all[r:b, k + K.RANK_BIAS] = 0.0
        x, x_pos, top = self.x[:r], self.x_pos[:r], self.top[:r]
        qu_t, x_t = torch.from_numpy(self.qu[:r]), torch.from_numpy(x)
        torch.addmm(torch.from_numpy(neg_bias).unsqueeze(0), qu_t, pj.t(), alpha=a, out=x_t)
        raw = None
        if scale.learn:  # d loss / d log a needs the plain dot products as well
            raw = torch.mm(qu_t, pj.t())
        K.softmax_shift(x, self.dot[:r], self.movies, m[:r], j, c[:r], _f32(a), x_pos, top)
        x_t.exp_()
        loss = K.softmax_grad(x, x_pos, top, c[:r], _f32(a), _f32(w / r), self.qu[:r], self.qm[:r], self.gu[:r],
                              self.gm_all[:r])
        # The two products that need every row: dL/du += a P Pj and dL/dPj = a P^T U.
        torch.from_numpy(self.gu[:r, :k]).addmm_(x_t, pj, alpha=a)
        neg = self.gm_all[b:b + n]
        neg[:, :k] = torch.mm(x_t.t(), qu_t).mul_(a).numpy()
        np.sum(x, axis=0, out=neg[:, k + K.RANK_BIAS])
        neg[:, k + K.MOVIE_BIAS] = 0.0
        if raw is not None:
            d_pos = self.gm_all[:r, k + K.RANK_BIAS].astype(np.float64)
            grad = a * (float(np.dot(d_pos, self.dot[:r])) + float((x_t * raw).sum()))
            scale.step(grad, lr, t)
        return loss * b / r


def _warm_up(params: FitParams, sampler: NegativeSampler | None) -> None:
    """Compile (or load from numba's cache) the kernels this run uses, before the first epoch's clock starts."""
    tiny = dataclasses.replace(params, batch_size=4, negatives=min(params.negatives, 2))
    model = make_model(tiny, 2, 3, 3.5, torch.Generator().manual_seed(0))
    step = _DotStep(model, tiny, sampler and NegativeSampler.__new__(NegativeSampler))
    if step.sampler is not None:
        step.sampler.log_correction_np = np.zeros(3, np.float32)
    u, m = np.array([0, 1, 0, 1], np.int32), np.array([0, 1, 2, 0], np.int32)
    j = np.array([1, 2], np.int32) if tiny.rank_loss == "softmax" else np.array([2, 2, 1, 1], np.int32)
    step(u, m, np.full(4, 3.0, np.float32), j, np.ones(4, np.float32), 0.001, 1,
         _ScalarAdam(math.log(2.0), learn=False))


@torch.no_grad()
def _fit_dot(model: DotProductBias, train: Ratings, params: FitParams, valid: Ratings | None,
             gen: torch.Generator, progress: Progress | None, governor: ThreadGovernor | None = None) -> History:
    r = len(train)
    bs = max(1, min(params.batch_size, r))
    params = dataclasses.replace(params, batch_size=bs)
    # A fixed scale (the inverse temperature of the ranking softmax) unless rank_scale <= 0: learned from 1.
    scale = _ScalarAdam(math.log(params.rank_scale) if params.rank_scale > 0 else 0.0, learn=params.rank_scale <= 0)
    steps_per_epoch = math.ceil(r / bs)
    total = steps_per_epoch * params.epochs
    w = params.bpr_weight
    softmax = params.rank_loss == "softmax"
    if params.rank_loss not in ("softmax", "bpr"):
        raise ValueError(f"unknown rank_loss {params.rank_loss!r} (expected softmax or bpr)")
    weights = positive_weights(train, params) if w > 0 and softmax else None
    if weights is not None and bool((weights == 1).all()):
        weights = None  # every rating a positive with weight 1
    sampler = negative_sampler(train, params) if w > 0 and softmax else None
    _warm_up(params, sampler)
    step_fn = _DotStep(model, params, sampler, rank_fraction(params, r))
    # One 16-byte record per rating, in huge pages: each epoch reads them in a random order.
    records = hugepages.zeros((r, 4), np.int32)
    records[:, 0], records[:, 1] = train.user, train.movie
    records[:, 2] = train.rating.astype(np.float32).view(np.int32)
    records[:, 3] = (np.ones(r, np.float32) if weights is None else weights).view(np.int32)
    eu, em = hugepages.zeros((r,), np.int32), hugepages.zeros((r,), np.int32)
    er, ec = hugepages.zeros((r,)), hugepages.zeros((r,))
    history = History()
    t = 0
    for epoch in range(params.epochs):
        start = time.perf_counter()
        K.shuffle_ratings(records, torch.randperm(r, generator=gen).numpy(), eu, em, er.view(np.int32),
                          ec.view(np.int32))
        if w > 0 and softmax:  # params.negatives shared by every rating of a batch
            negatives = sampler.draw(steps_per_epoch, params.negatives, gen).numpy().astype(np.int32)
        elif w > 0:  # one negative per rating
            negatives = torch.randint(0, train.n_movies, (r,), generator=gen).numpy().astype(np.int32)
        else:
            negatives = None
        loss_sum = rank_sum = 0.0
        if governor is not None:
            governor.restart()
        for step, s in enumerate(range(0, r, bs)):
            t += 1
            lr = one_cycle(t - 1, total, params.lr)
            j = None if negatives is None else negatives[step] if softmax else negatives[s:s + bs]
            c = None if weights is None else ec[s:s + bs]
            sq, rank = step_fn(eu[s:s + bs], em[s:s + bs], er[s:s + bs], j, c, lr, t, scale)
            loss_sum += sq
            rank_sum += rank
            if governor is not None:
                governor.step(t)
        loss = loss_sum / r
        if not math.isfinite(loss) or not math.isfinite(rank_sum):
            raise DivergedError(f"training diverged in epoch {epoch + 1}: loss is {loss} (try a lower --lr)")
        model.rank_scale = math.exp(scale.value)
        _record(history, model, valid, loss, rank_sum / r, time.perf_counter() - start, epoch, params.epochs, progress)
    step_fn.release()
    return history

def _fit_nn(model: EmbeddingNN, train: Ratings, params: FitParams, valid: Ratings | None,
            gen: torch.Generator, progress: Progress | None) -> History:
    r = len(train)
    users = torch.from_numpy(train.user)
    movies = torch.from_numpy(train.movie)
    ratings = torch.from_numpy(train.rating)
    opt = torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=params.wd, betas=(0.9, 0.99))
    lo, hi = model.y_range
    bs = max(1, min(params.batch_size, r))
    steps_per_epoch = math.ceil(r / bs)
    total = steps_per_epoch * params.epochs
    w = params.bpr_weight
    softmax = params.rank_loss == "softmax"
    sampler = negative_sampler(train, params) if w > 0 and softmax else None
    weights = torch.from_numpy(positive_weights(train, params)) if sampler is not None else None
    fraction = rank_fraction(params, r)
    history = History()
    t = 0
    for epoch in range(params.epochs):
        model.train()
        start = time.perf_counter()
        perm = torch.randperm(r, generator=gen)
        eu, em, er = users[perm].long(), movies[perm].long(), ratings[perm]
        ec = None if weights is None else weights[perm]
        if sampler is not None:
            negatives = sampler.draw(steps_per_epoch, params.negatives, gen)
        elif w > 0:
            negatives = torch.randint(0, train.n_movies, (r,), generator=gen)
        else:
            negatives = None
        loss_sum = bpr_sum = 0.0
        for step, s in enumerate(range(0, r, bs)):
            for group in opt.param_groups:
                group["lr"] = one_cycle(t, total, params.lr)
            t += 1
            u, m, y = eu[s:s + bs], em[s:s + bs], er[s:s + bs]
            pu = model.user_factors[u]
            z = model.logit_from(pu, model.movie_factors[m])
            pred = lo + (hi - lo) * torch.sigmoid(z + model.global_bias)
            mse = torch.nn.functional.mse_loss(pred, y)
            loss = mse
            if sampler is not None:
                # The sampled softmax of ``dot``, on ``logit + rank_bias`` (scale 1: the logit is
                # already the model's own scale); shared negatives, logQ-corrected.
                # Only the first n_rank ratings of the (random) batch: each pair runs the MLP.
                j = negatives[step]
                n_rank = ranked_rows(fraction, len(u))
                mr = m[:n_rank]
                x_pos = z[:n_rank] + model.rank_bias[mr]
                x_neg = model.negative_logits(pu[:n_rank], model.movie_factors[j]) + model.rank_bias[j]
                if sampler.log_correction is not None:
                    x_neg = x_neg - sampler.log_correction[j]
                x_neg = x_neg.masked_fill(j.unsqueeze(0) == mr.unsqueeze(1), float("-inf"))
                per_row = torch.logsumexp(torch.cat([x_pos.unsqueeze(1), x_neg], 1), 1) - x_pos
                rank = (per_row * ec[s:s + n_rank]).mean()
                loss = loss + w * rank
                bpr_sum += float(rank.detach()) * len(u)
            elif negatives is not None:
                zj = model.logit_from(pu, model.movie_factors[negatives[s:s + bs]])
                bpr = torch.nn.functional.softplus(zj - z).mean()
                loss = loss + w * bpr
                bpr_sum += float(bpr.detach()) * len(u)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += float(mse.detach()) * len(u)
        loss_value = loss_sum / r
        if not math.isfinite(loss_value) or not math.isfinite(bpr_sum):
            raise DivergedError(f"training diverged in epoch {epoch + 1}: loss is {loss_value} (try a lower --lr)")
        _record(history, model, valid, loss_value, bpr_sum / r, time.perf_counter() - start, epoch, params.epochs,
                progress)
    return history


def _record(history: History, model: DotProductBias | EmbeddingNN, valid: Ratings | None, loss: float, bpr: float,
            seconds: float, epoch: int, epochs: int, progress: Progress | None) -> None:
    history.loss.append(loss)
    history.bpr.append(bpr)
    history.seconds.append(seconds)
    v = None
    if valid is not None and len(valid):
        v = rmse(model.predict(valid.user, valid.movie), valid.rating)
        history.valid_rmse.append(v)
    if progress is not None:
        progress(epoch + 1, epochs, loss, v)
