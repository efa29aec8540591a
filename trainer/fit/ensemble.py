"""An ensemble of ``dot`` fits published as one ``dot`` model (``FitParams.ensemble``).

Members are trained one after the other with seeds ``seed, seed + 1, ...`` on the same data and
parameters; only the random draws (initialisation, order, negatives) differ. Averaging their
logits removes much of the noise a single stochastic fit carries, which on MovieLens 100K is
worth more RMSE than any single-model setting found (docs/trainer.md).

Why it is still one ``dot`` model: with every member's factors scaled by ``1/sqrt(K)`` and put
side by side (``k * K`` factors), ``u·m`` of the combined vectors is the members' mean ``u_i·m_i``.
The rating and rank biases are averaged (the rank bias after dividing out each member's rank
scale, so the combined scale is 1). So the combined model's rating logit is exactly the
members' mean logit and its ranking score ``u·m + rank_bias`` exactly their mean ranking score;
``/predict``, ``/recommend`` and the fold-in of new users see an ordinary ``dot`` model with
more factors.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch

from trainer.data import Ratings
from trainer.fit.loop import Progress
from trainer.fit.params import FitParams, History
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
    return combine(members), merge_histories(histories)


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
