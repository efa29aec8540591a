"""The ``dot`` step in torch ops on one device (a GPU, or the CPU for tests): the ``torch`` engine.

The same model, loss and optimiser semantics as the numba engine (:mod:`trainer.fit.dot`):
``MSE(lo + span sigmoid(u·m + b_u + b_m + g)) + wd |row|^2`` per occurrence, plus ``rank_weight``
times the sampled softmax over the batch's shared, popularity-drawn negatives (logQ-corrected,
weighted positives, the first ``fraction`` of each batch) or one-negative BPR, and lazy Adam on the
rows the batch touched (:mod:`trainer.fit.lazy_adam`). Tables use the numba engine's layout: a user
row ``[factors | bias]``, a movie row ``[factors | rank bias | bias]``.

Gradients come from autograd on the *gathered* rows (leaves of shape batch x row), never on the
tables, so no table-sized gradient exists; the optimiser scatters them. The data moves to the
device once (:class:`TorchDotStep` holds every rating there); each epoch's order is a gather on
the device, each batch a slice. Losses stay on the device as tensors: the epoch loop turns them
into numbers once per epoch, so a step never waits for the GPU.

Where the rows live is a :class:`Tables`: :class:`LocalTables` here (the whole tables on one
device), or the row shards of a distributed job (:mod:`trainer.fit.sharded`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import torch

from trainer import kernels as K
from trainer.data import Ratings
from trainer.fit.engine import Engine
from trainer.fit.lazy_adam import RowAdam
from trainer.fit.loop import epoch_seed, parallel_permutation
from trainer.fit.optim import ScalarAdam
from trainer.fit.params import FitParams
from trainer.fit.sampling import Ranking, ranked_rows
from trainer.models import DotProductBias

#: ``reduce(tensor)``: the sum of a small tensor over every process of a job (identity alone).
Reduce = Callable[[torch.Tensor], torch.Tensor]


class Tables(Protocol):
    """Where a fit's user and movie rows live, and their optimiser."""

    def pull(self, users: torch.Tensor, movies: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Copies of the rows ``users`` of the user table and ``movies`` of the movie table."""

    def push(self, users: torch.Tensor, gu: torch.Tensor, movies: torch.Tensor, gm: torch.Tensor, positives: int,
             lr: float, t: int) -> None:
        """Lazy Adam with these gradient rows; the movie bias only from the first ``positives`` movie rows."""

    def full(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The whole tables on the CPU (None where this process does not hold the model)."""


def table_rows(model: DotProductBias) -> tuple[torch.Tensor, torch.Tensor]:
    """The model as the two training tables: users ``[factors | bias]``, movies ``[factors | rank bias | bias]``."""
    with torch.no_grad():
        users = torch.cat([model.user_factors, model.user_bias.unsqueeze(1)], 1)
        movies = torch.cat([model.movie_factors, model.rank_bias.unsqueeze(1), model.movie_bias.unsqueeze(1)], 1)
    return users.float().contiguous(), movies.float().contiguous()


def load_tables(model: DotProductBias, users: torch.Tensor, movies: torch.Tensor) -> None:
    """Write whole tables (any device) back into the model's CPU parameters."""
    k = model.factors
    users, movies = users.detach().cpu(), movies.detach().cpu()
    with torch.no_grad():
        model.user_factors.data = users[:, :k].contiguous()
        model.user_bias.data = users[:, k + K.USER_BIAS].contiguous()
        model.movie_factors.data = movies[:, :k].contiguous()
        model.rank_bias.data = movies[:, k + K.RANK_BIAS].contiguous()
        model.movie_bias.data = movies[:, k + K.MOVIE_BIAS].contiguous()


class LocalTables:
    """Both tables whole on one device, each with its :class:`RowAdam` (sparse on a CPU, dense on a GPU)."""

    def __init__(self, users: torch.Tensor, movies: torch.Tensor, device: torch.device) -> None:
        mode = "sparse" if device.type == "cpu" else "dense"
        self.users, self.movies = users.to(device), movies.to(device)
        self.k = users.shape[1] - 1
        self.opt_users, self.opt_movies = RowAdam(self.users, mode), RowAdam(self.movies, mode)

    def pull(self, users: torch.Tensor, movies: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.users.index_select(0, users), self.movies.index_select(0, movies)

    def push(self, users: torch.Tensor, gu: torch.Tensor, movies: torch.Tensor, gm: torch.Tensor, positives: int,
             lr: float, t: int) -> None:
        self.opt_users.step(users, gu, lr, t)
        self.opt_movies.step(movies, gm, lr, t, tail_from=self.k + K.MOVIE_BIAS, tail_limit=positives)

    def full(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.users, self.movies


def dot_loss(qu: torch.Tensor, qm: torch.Tensor, y: torch.Tensor, j: torch.Tensor | None, c: torch.Tensor | None,
             m: torch.Tensor, log_a: torch.Tensor, ranking: Ranking, params: FitParams,
             consts: tuple[float, float, float],
             norm: tuple[int, int], ranked: int, log_q: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    """The objective on gathered rows: ``(loss, squared error sum, ranking loss sum)``.

    ``qu`` (b, k+1) and ``qm`` (b + extra, k+2) are the batch's user rows and its movie rows
    (positives, then the negatives ``j``); ``norm = (B, R)`` the whole batch's size and ranked rows
    (a distributed rank holds part of a batch), ``ranked`` how many of these rows are ranked (the
    first ones); ``consts = (lo, span, g0)``; ``log_q`` the logQ correction per movie (None: uniform).
    The loss is that of the numba kernels (trainer/kernels.py), normalised by the whole batch.
    """
    lo, span, g0 = consts
    big_b, big_r = norm
    b = y.shape[0]
    k = qu.shape[1] - 1
    u_f, m_f = qu[:, :k], qm[:b, :k]
    dot = (u_f * m_f).sum(1)
    err = torch.sigmoid(dot + qu[:, k + K.USER_BIAS] + qm[:b, k + K.MOVIE_BIAS] + g0) * span + lo - y
    sq = (err * err).sum()
    loss = sq / big_b + params.wd / big_b * ((u_f * u_f).sum() + (m_f * m_f).sum())
    rank = torch.zeros((), device=qu.device)
    if ranking.loss == "softmax" and ranked > 0:
        a = log_a.exp()
        pj, neg_bias = qm[b:, :k], qm[b:, k + K.RANK_BIAS]
        if log_q is not None:
            neg_bias = neg_bias - log_q[j]
        x_neg = a * (u_f[:ranked] @ pj.t()) + neg_bias.unsqueeze(0)
        x_neg = x_neg.masked_fill(j.unsqueeze(0) == m[:ranked].unsqueeze(1), float("-inf"))
        x_pos = a * dot[:ranked] + qm[:ranked, k + K.RANK_BIAS]
        ce = torch.logsumexp(torch.cat([x_pos.unsqueeze(1), x_neg], 1), 1) - x_pos
        per_row = ce if c is None else c[:ranked] * ce  # a weight-0 row takes no part (its gradient is 0)
        total = per_row.sum()
        loss = loss + ranking.weight / big_r * total
        rank = total * (big_b / big_r)
    elif ranking.loss == "bpr":
        pj = qm[b:, :k]
        x = qm[:b, k + K.RANK_BIAS] - qm[b:, k + K.RANK_BIAS] + (u_f * (m_f - pj)).sum(1)
        rank = torch.nn.functional.softplus(-x).sum()
        loss = loss + ranking.weight / big_b * rank + params.wd / big_b * (pj * pj).sum()
    return loss, sq.detach(), rank.detach()


class TorchDotStep:
    """The ``dot`` step in torch ops on ``engine.device`` (:class:`trainer.fit.loop.Step`).

    ``part = (rank, world)``: this process trains the rank-th of ``world`` equal slices of every
    batch (a distributed job; the rows then come from a shared :class:`Tables`, and ``reduce``
    sums the losses over the job). Alone: ``(0, 1)`` and :class:`LocalTables`.
    """

    def __init__(self, model: DotProductBias, train: Ratings, params: FitParams, ranking: Ranking, engine: Engine,
                 tables: Tables | None = None, part: tuple[int, int] = (0, 1), reduce: Reduce | None = None) -> None:
        self.model, self.params, self.ranking = model, params, ranking
        self.device = engine.torch_device()
        self.tables = tables if tables is not None else LocalTables(*table_rows(model), self.device)
        self.part, self.reduce = part, reduce
        dev = self.device
        # The data, once: every rating on the device (the epoch's order is a gather there).
        self.users = torch.from_numpy(train.user).to(dev, torch.int64)
        self.movies = torch.from_numpy(train.movie).to(dev, torch.int64)
        self.ratings = torch.from_numpy(train.rating).to(dev, torch.float32)
        weights = ranking.positive_weights
        self.weights = None if weights is None else torch.from_numpy(weights).to(dev)
        sampler = ranking.sampler
        log_q = None if sampler is None else sampler.log_correction
        self.log_q = None if log_q is None else log_q.to(dev, torch.float32)
        self.scale = ScalarAdam(math.log(params.rank_scale) if params.rank_scale > 0 else 0.0,
                                learn=params.rank_scale <= 0)
        lo, hi = model.y_range
        self.consts = (float(lo), float(hi - lo), float(model.global_bias))
        self.user = self.movie = self.rating = self.users
        self.weight: torch.Tensor | None = None
        self.negatives: torch.Tensor | None = None
        self.fixed_log_a: torch.Tensor | None = None

    def permutation(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """The epoch's order, from one draw of ``gen``: on the CPU the numba engine's (the same order), on the
        GPU drawn there (a CPU permutation of 100M ratings would cost ~1 s an epoch, and a copy)."""
        if self.device.type == "cpu":
            return parallel_permutation(n, gen)
        generator = torch.Generator(self.device).manual_seed(epoch_seed(gen))
        return torch.randperm(n, generator=generator, device=self.device)

    def begin_epoch(self, order: torch.Tensor, negatives: torch.Tensor | None) -> None:
        order = order.to(self.device)
        self.user, self.movie, self.rating = self.users[order], self.movies[order], self.ratings[order]
        self.weight = None if self.weights is None else self.weights[order]
        self.negatives = None if negatives is None else negatives.to(self.device, torch.int64)

    def _mine(self, rows: slice) -> tuple[slice, int, int]:
        """This process's slice of the batch ``rows``, the batch's size and its first row's position in it."""
        rank, world = self.part
        start, stop = rows.start, min(rows.stop, self.user.shape[0])
        size = stop - start
        lo, hi = start + size * rank // world, start + size * (rank + 1) // world
        return slice(lo, hi), size, lo - start

    def __call__(self, batch: int, rows: slice, lr: float, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        mine, size, offset = self._mine(rows)
        u, m, y = self.user[mine], self.movie[mine], self.rating[mine]
        c = None if self.weight is None else self.weight[mine]
        b = u.shape[0]
        ranking = self.ranking
        j = None
        if ranking.loss == "softmax":
            j = self.negatives[batch]
        elif ranking.loss == "bpr":
            j = self.negatives[mine]
        movie_idx = m if j is None else torch.cat([m, j])
        qu, qm = self.tables.pull(u, movie_idx)
        qu.requires_grad_(True)
        qm.requires_grad_(True)
        log_a = self._log_a()
        big_r = ranked_rows(ranking.fraction, size)
        ranked = max(0, min(b, big_r - offset))
        loss, sq, rank = dot_loss(qu, qm, y, j, c, m, log_a, ranking, self.params, self.consts, (size, big_r),
                                  ranked, self.log_q)
        inputs = [qu, qm, log_a] if self.scale.learn else [qu, qm]
        grads = torch.autograd.grad(loss, inputs, allow_unused=True)
        if self.scale.learn:
            g_a = torch.zeros(1, device=self.device) if grads[2] is None else grads[2].reshape(1)
            self.scale.step(float(self.reduce(g_a) if self.reduce else g_a), lr, t)
        gu = torch.zeros_like(qu) if grads[0] is None else grads[0]
        gm = torch.zeros_like(qm) if grads[1] is None else grads[1]
        self.tables.push(u, gu, movie_idx, gm, b, lr, t)
        if self.reduce is not None:
            both = self.reduce(torch.stack([sq, rank]))
            return both[0], both[1]
        return sq, rank

    def _log_a(self) -> torch.Tensor:
        """The ranking scale's log as a tensor: made once when fixed (a host-to-GPU copy per step would make the
        step wait), each step when learned (its Adam runs on the host)."""
        if self.scale.learn:
            return torch.tensor(self.scale.value, device=self.device, requires_grad=True)
        if self.fixed_log_a is None:
            self.fixed_log_a = torch.tensor(self.scale.value, device=self.device)
        return self.fixed_log_a

    def end_epoch(self) -> None:
        self.model.rank_scale = math.exp(self.scale.value)
        whole = self.tables.full()
        if whole is not None:  # the model sees training progress (validation each epoch)
            load_tables(self.model, *whole)

    def finish(self) -> None:
        self.end_epoch()
