"""The ``dot`` step: hand-derived gradients in compiled kernels, tables in huge pages, row-sparse Adam.

Why not autograd: on embedding lookups it costs a dense gradient the size of each table per
step, and torch ops for the hand-derived step were ~40 small passes over memory per batch;
the kernels of :mod:`trainer.kernels` do each part of the step in one pass per row, and leave
the sampled softmax's three matrix products to BLAS. The measurements behind this:
docs/trainer.md. The gradients are checked against autograd in tests/trainer/test_kernels.py.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from trainer import hugepages
from trainer import kernels as K
from trainer.data import Ratings
from trainer.fit.loop import parallel_permutation
from trainer.fit.optim import LazyAdam, ScalarAdam, f32
from trainer.fit.params import FitParams
from trainer.fit.sampling import Ranking, ranked_rows
from trainer.models import DotProductBias, global_logit


class DotBatch:
    """One minibatch of ``dot``: forward, hand-derived gradients of the mean loss, lazy Adam.

    The loss is ``MSE + w * ranking`` with L2 ``wd |row|^2`` per occurrence (gradients in
    :mod:`trainer.kernels`); the ranking term is the one ``ranking`` describes. Buffers are
    allocated once for the largest batch and sliced for the last one.

    While training, the model's five tensors are views of two tables in huge pages (see
    :mod:`trainer.hugepages`), a user row ``[factors | bias]`` and a movie row
    ``[factors | rank bias | bias]``; :meth:`release` gives the model contiguous tensors back.
    """

    def __init__(self, model: DotProductBias, params: FitParams, ranking: Ranking) -> None:
        self.params, self.ranking = params, ranking
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
        extra = {"softmax": ranking.negatives, "bpr": b, "none": 0}[ranking.loss]
        self.opt_users = LazyAdam(self.users, b)
        self.opt_movies = LazyAdam(self.movies, b + extra)
        self.qu, self.qm = np.empty((b, k), np.float32), np.empty((b, k), np.float32)
        self.gu = np.empty((b, k + 1), np.float32)
        self.gm_all = np.zeros((b + extra, k + 2), np.float32)  # [positives; negatives]: one update for both
        self.m_all = np.empty(b + extra, np.int32)
        self.dot, self.x_pos, self.top = (np.empty(b, np.float32) for _ in range(3))
        self.x = np.empty((b, ranking.negatives if ranking.loss == "softmax" else 0), np.float32)
        self.ones = np.ones(b, np.float32)
        lo, hi = model.y_range
        self.lo, self.span, self.g0 = f32(lo), f32(hi - lo), f32(model.global_bias)

    def release(self) -> None:
        """Give the model contiguous tensors of its own (the training tables can then be freed)."""
        for param, view in self._views:
            param.data = torch.from_numpy(np.ascontiguousarray(view))

    def __call__(self, u: np.ndarray, m: np.ndarray, y: np.ndarray, j: np.ndarray | None, c: np.ndarray | None,
                 lr: float, t: int, scale: ScalarAdam) -> tuple[float, float]:
        """Train on ratings ``(u, m, y)`` with negatives ``j`` and positive weights ``c`` (None: all 1)."""
        b, k = u.shape[0], self.k
        w, wd = self.ranking.weight, self.params.wd
        reg = f32(2 * wd / b)
        qu, qm, gu, gm = self.qu[:b], self.qm[:b], self.gu[:b], self.gm_all[:b]
        sq = K.rating_rows(self.users, self.movies, u, m, y, self.lo, self.span, self.g0, reg, f32(1 / b),
                           qu, qm, gu, gm, self.dot[:b])
        rank = 0.0
        n_extra = 0
        if self.ranking.loss == "softmax":
            n_extra = j.shape[0]
            rank = self._softmax(m, j, self.ones[:b] if c is None else c, b, w, lr, t, scale)
        elif self.ranking.loss == "bpr":
            n_extra = b
            rank = K.bpr_rows(self.movies, m, j, f32(w / b), reg, qu, qm, gu, gm, self.gm_all[b:2 * b])
        self.opt_users.step(u, gu, lr, t)
        self.m_all[:b] = m
        if n_extra:
            self.m_all[b:b + n_extra] = j
        end = b + n_extra
        # The movie bias learns from the positives only (the first b occurrences).
        self.opt_movies.step(self.m_all[:end], self.gm_all[:end], lr, t, tail_from=k + K.MOVIE_BIAS, tail_limit=b)
        return sq, rank

    def _softmax(self, m: np.ndarray, j: np.ndarray, c: np.ndarray, b: int, w: float, lr: float, t: int,
                 scale: ScalarAdam) -> float:
        # Logits a (u·m) + rank_bias[m], minus log(m q_j) for popularity-sampled negatives;
        # ranking by them is ranking by u·m + rank_bias/a, which is what is exported.
        k = self.k
        a = math.exp(float(scale.value))
        n = j.shape[0]
        pj = torch.from_numpy(self.movies[j, :k])
        neg_bias = self.movies[j, k + K.RANK_BIAS]
        sampler = self.ranking.sampler
        if sampler is not None and sampler.log_correction_np is not None:
            neg_bias -= sampler.log_correction_np[j]
        # Only the first r ratings of the (randomly ordered) batch take part, each counting b/r times.
        r = ranked_rows(self.ranking.fraction, b)
        self.gm_all[r:b, k + K.RANK_BIAS] = 0.0
        x, x_pos, top = self.x[:r], self.x_pos[:r], self.top[:r]
        qu_t, x_t = torch.from_numpy(self.qu[:r]), torch.from_numpy(x)
        torch.addmm(torch.from_numpy(neg_bias).unsqueeze(0), qu_t, pj.t(), alpha=a, out=x_t)
        raw = None
        if scale.learn:  # d loss / d log a needs the plain dot products as well
            raw = torch.mm(qu_t, pj.t())
        K.softmax_shift(x, self.dot[:r], self.movies, m[:r], j, c[:r], f32(a), x_pos, top)
        x_t.exp_()
        loss = K.softmax_grad(x, x_pos, top, c[:r], f32(a), f32(w / r), self.qu[:r], self.qm[:r], self.gu[:r],
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


class DotStep:
    """The ``dot`` step as the epoch loop drives it (:class:`trainer.fit.loop.Step`).

    Holds the ratings as one 16-byte record each, in huge pages, and shuffles them each epoch
    into contiguous columns with one compiled pass (each random read is one cache line, not
    four); batches are slices of those columns, trained by :class:`DotBatch`. The ranking
    scale (inverse softmax temperature) is fixed at ``rank_scale`` unless that is <= 0: then it
    is learned, starting from 1.
    """

    def __init__(self, model: DotProductBias, train: Ratings, params: FitParams, ranking: Ranking) -> None:
        self.model = model
        self.scale = ScalarAdam(math.log(params.rank_scale) if params.rank_scale > 0 else 0.0,
                                learn=params.rank_scale <= 0)
        self.batch_step = DotBatch(model, params, ranking)
        r = len(train)
        weights = ranking.positive_weights
        self.weighted = weights is not None
        self.records = hugepages.zeros((r, 4), np.int32)
        self.records[:, 0], self.records[:, 1] = train.user, train.movie
        self.records[:, 2] = train.rating.astype(np.float32).view(np.int32)
        self.records[:, 3] = (np.ones(r, np.float32) if weights is None else weights).view(np.int32)
        self.user, self.movie = hugepages.zeros((r,), np.int32), hugepages.zeros((r,), np.int32)
        self.rating, self.weight = hugepages.zeros((r,)), hugepages.zeros((r,))
        self.softmax = ranking.loss == "softmax"
        self.negatives: np.ndarray | None = None

    def permutation(self, n: int, gen: torch.Generator) -> torch.Tensor:
        return parallel_permutation(n, gen)

    def begin_epoch(self, order: torch.Tensor, negatives: torch.Tensor | None) -> None:
        K.shuffle_ratings(self.records, order.numpy(), self.user, self.movie, self.rating.view(np.int32),
                          self.weight.view(np.int32))
        self.negatives = None if negatives is None else negatives.numpy().astype(np.int32)

    def __call__(self, batch: int, rows: slice, lr: float, t: int) -> tuple[float, float]:
        neg = self.negatives
        j = None if neg is None else neg[batch] if self.softmax else neg[rows]
        c = self.weight[rows] if self.weighted else None
        return self.batch_step(self.user[rows], self.movie[rows], self.rating[rows], j, c, lr, t, self.scale)

    def end_epoch(self) -> None:
        self.model.rank_scale = math.exp(self.scale.value)

    def finish(self) -> None:
        self.batch_step.release()


def warm_up(params: FitParams) -> None:
    """Compile (or load from numba's cache) the kernels a fit with ``params`` uses, before its clock starts.

    Runs one batch of a real step, with the same ranking term, on four ratings of two users.
    """
    tiny = dataclasses.replace(params, batch_size=4, negatives=min(params.negatives, 2))
    train = Ratings(np.array([0, 1, 0, 1], np.int32), np.array([0, 1, 2, 0], np.int32), np.full(4, 3.0, np.float32),
                    np.arange(4, dtype=np.int64), np.arange(2, dtype=np.int64), np.arange(3, dtype=np.int64))
    gen = torch.Generator().manual_seed(0)
    model = DotProductBias(2, 3, tiny.factors, tiny.y_range, global_logit(3.0, tiny.y_range), tiny.init_std, gen)
    ranking = Ranking.of(train, tiny)
    step = DotStep(model, train, tiny, ranking)
    step.begin_epoch(torch.randperm(4, generator=gen), ranking.draw(gen, 1, 4))
    step(0, slice(0, 4), 0.001, 1)
