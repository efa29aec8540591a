"""An ensemble of ``dot`` fits published as one ``dot`` model (``FitParams.ensemble``).

Members are trained one after the other with seeds ``seed, seed + 1, ...`` on the same data and
parameters; only the random draws (initialisation, order, negatives) differ. Averaging their
logits removes much of the noise a single stochastic fit carries, which on MovieLens 100K is
worth more RMSE than any single-model setting found (docs/trainer.md).

Why it is still one ``dot`` model of ``k`` factors: with every member's factors scaled by
``1/sqrt(K)`` and put side by side (``k * K`` factors), ``u·m`` of the combined vectors is the
members' mean ``u_i·m_i``; the rating and rank biases are averaged (the rank bias after dividing
out each member's rank scale, so the combined scale is 1). So that model's rating logit is exactly
the members' mean logit and its ranking score ``u·m + rank_bias`` exactly their mean ranking score.
It is then cut back to ``k`` factors (:func:`truncate`): the best rank-``k`` approximation of the
mean ``U M^T`` over every (user, movie) pair. The members' products share most of their
structure, so the mean's spectrum falls fast (on an ML-100K tuning fold, K = 3, k = 64: singular
values 580, 25, 11, 5, 2.7 ... at every 16th) and the cut costs nothing measurable (RMSE 0.8955
with 192 factors, 0.8954 with 64, 0.8958 with 32; one model 0.8997). ``/predict``, ``/recommend``,
the fold-in of new users and the ANN index see an ordinary ``dot`` model of the usual size.

With ``params.refit_l2 > 0`` (off by default; docs/trainer.md has what 200 gave) the cut model's factors and rating biases are then
refitted to the rating loss alone, near where the members' mean put them (:mod:`trainer.fit.refit`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch

from trainer.data import Ratings
from trainer.fit.loop import Progress
from trainer.fit.params import FitParams, History
from trainer.fit.refit import refit_rating
from trainer.models import DotProductBias

#: ``fit_one(train, params, valid, progress)``: one member's fit (``trainer.fit.fit`` with ``ensemble = 1``).
FitOne = Callable[[Ratings, FitParams, Ratings | None, Progress | None], tuple[DotProductBias, History]]


def member_params(params: FitParams, index: int) -> FitParams:
    """The parameters of member ``index`` (0-based): one model (``ensemble = 1``), seed ``seed + index``."""
    return dataclasses.replace(params, ensemble=1, seed=params.seed + index)


def fit_ensemble(train: Ratings, params: FitParams, valid: Ratings | None, progress: Progress | None,
                 fit_one: FitOne) -> tuple[DotProductBias, History]:
    """Train ``params.ensemble`` members with ``fit_one`` and combine them (:func:`combine`).

    ``progress`` sees the members' epochs as one run of ``ensemble * epochs`` epochs.
    """
    n = params.ensemble
    members: list[DotProductBias] = []
    histories: list[History] = []
    for i in range(n):
        inner = None
        if progress is not None:
            def inner(epoch: int, epochs: int, loss: float, v: float | None, _i: int = i) -> None:
                progress(_i * epochs + epoch, n * epochs, loss, v)
        model, history = fit_one(train, member_params(params, i), valid, inner)
        members.append(model)
        histories.append(history)
    model = truncate(combine(members), params.factors)
    if params.refit_l2 > 0:
        model = refit_rating(model, train, params.refit_l2, sweeps=params.refit_sweeps)
    return model, merge_histories(histories)


@torch.no_grad()
def combine(members: list[DotProductBias]) -> DotProductBias:
    """One ``dot`` model whose rating logits and ranking scores are the ``members``' means (see the module)."""
    first = members[0]
    n = len(members)
    s = 1.0 / math.sqrt(n)
    out = DotProductBias(first.user_factors.shape[0], first.movie_factors.shape[0], first.factors * n,
                         first.y_range, first.global_bias)
    out.user_factors.data = torch.cat([m.user_factors.detach() * s for m in members], 1).contiguous()
    out.movie_factors.data = torch.cat([m.movie_factors.detach() * s for m in members], 1).contiguous()
    out.user_bias.data = torch.stack([m.user_bias.detach() for m in members]).mean(0)
    out.movie_bias.data = torch.stack([m.movie_bias.detach() for m in members]).mean(0)
    out.rank_bias.data = torch.stack([m.rank_bias.detach() / m.rank_scale for m in members]).mean(0)
    out.rank_scale = 1.0
    return out


@torch.no_grad()
def truncate(model: DotProductBias, rank: int) -> DotProductBias:
    """``model`` with ``rank`` factors: ``U M^T`` replaced by its best rank-``rank`` approximation (Eckart-Young).

    Computed without the dense (users x movies) product: ``U = Qu Ru``, ``M = Qm Rm`` (thin QR), the
    SVD ``Ru Rm^T = A S B^T`` of a small square matrix, then ``U' = Qu A_r S_r^(1/2)``,
    ``M' = Qm B_r S_r^(1/2)`` (the singular values split evenly between the two sides). In float64,
    cost O((users + movies) (k K)^2). Biases are kept. A model with at most ``rank`` factors is returned as is.
    """
    if model.factors <= rank:
        return model
    u, m = model.user_factors.detach().double(), model.movie_factors.detach().double()
    qu, ru = torch.linalg.qr(u)
    qm, rm = torch.linalg.qr(m)
    a, s, bt = torch.linalg.svd(ru @ rm.T)
    r = min(rank, s.shape[0])
    root = s[:r].sqrt()
    out = DotProductBias(u.shape[0], m.shape[0], rank, model.y_range, model.global_bias)
    uf = torch.zeros((u.shape[0], rank), dtype=torch.float64)
    mf = torch.zeros((m.shape[0], rank), dtype=torch.float64)
    uf[:, :r] = qu @ (a[:, :r] * root)
    mf[:, :r] = qm @ (bt[:r].T * root)
    out.user_factors.data = uf.float().contiguous()
    out.movie_factors.data = mf.float().contiguous()
    for name in ("user_bias", "movie_bias", "rank_bias"):
        getattr(out, name).data = getattr(model, name).detach().clone()
    out.rank_scale = model.rank_scale
    return out


def merge_histories(histories: list[History]) -> History:
    """Per epoch: the members' mean loss, ranking loss and validation RMSE (each member's own, not the
    ensemble's), and their summed seconds; threads and engine of the first member."""
    first = histories[0]

    def mean(name: str) -> list[float]:
        rows = [getattr(h, name) for h in histories]
        if not all(rows):
            return []
        return [sum(v) / len(v) for v in zip(*rows, strict=True)]

    dropped = [h.threads_dropped_at_step for h in histories if h.threads_dropped_at_step is not None]
    return History(loss=mean("loss"), rank=mean("rank"), valid_rmse=mean("valid_rmse"),
                   seconds=[sum(v) for v in zip(*(h.seconds for h in histories), strict=True)],
                   threads=first.threads, threads_dropped_at_step=dropped[0] if dropped else None,
                   engine=first.engine, world_size=first.world_size, members=len(histories))
