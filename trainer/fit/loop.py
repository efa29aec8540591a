"""The epoch loop every model kind trains through; what differs between kinds is the :class:`Step`.

The loop owns what must be the same for every kind, so that a seed means the same thing
everywhere: the order in which the fit's one ``torch.Generator`` is drawn from (each epoch a
permutation of the ratings, then that epoch's negatives), the learning-rate schedule by step,
the divergence check and the history. A step owns how a batch is computed and where the data
lives (compiled kernels on huge-page tables for ``dot``, autograd for ``nn``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch

from trainer import DivergedError
from trainer import kernels as K
from trainer.data import Ratings
from trainer.fit.params import FitParams, History
from trainer.fit.sampling import Ranking
from trainer.fit.schedule import one_cycle
from trainer.fit.threads import ThreadGovernor
from trainer.metrics import rmse

#: ``progress(epoch, n_epochs, loss, valid_rmse_or_None)`` called after every epoch.
Progress = Callable[[int, int, float, float | None], None]


class Model(Protocol):
    """What the loop asks of a model: predicted ratings, for the validation RMSE after each epoch."""

    def predict(self, user: np.ndarray, movie: np.ndarray) -> np.ndarray: ...


class Step(Protocol):
    """One model kind's training step, as the epoch loop drives it."""

    #: The model being trained.
    model: Model

    def permutation(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """The epoch's order of the ``n`` ratings, drawn from ``gen`` (:func:`cpu_permutation` unless the step
        has a faster way: the numba step's is parallel, the GPU step's is drawn on the GPU)."""

    def begin_epoch(self, order: torch.Tensor, negatives: torch.Tensor | None) -> None:
        """Take the epoch's order of the ratings (a permutation) and its negatives (:meth:`Ranking.draw`)."""

    def __call__(self, batch: int, rows: slice, lr: float, t: int) -> tuple[float, float]:
        """Train on batch number ``batch`` (the ratings ``rows`` of the epoch's order) at step ``t``.

        Returns the batch's summed squared rating error and its ranking loss summed over ratings, as
        numbers or as 0-dim tensors (a GPU step's stay on the GPU: the loop reads them once an epoch).
        """

    def end_epoch(self) -> None:
        """After an epoch that did not diverge, before the model is validated."""

    def finish(self) -> None:
        """After the last epoch: leave the model standing on its own."""


def run_epochs(step: Step, train: Ratings, params: FitParams, ranking: Ranking, valid: Ratings | None,
               gen: torch.Generator, progress: Progress | None = None,
               governor: ThreadGovernor | None = None) -> History:
    """Train ``params.epochs`` epochs of ``params.batch_size`` ratings; raise DivergedError on a NaN/inf loss."""
    r = len(train)
    bs = params.batch_size
    batches = math.ceil(r / bs)
    total = batches * params.epochs
    history = History()
    t = 0
    for epoch in range(params.epochs):
        start = time.perf_counter()
        order = step.permutation(r, gen)
        step.begin_epoch(order, ranking.draw(gen, batches, r))
        loss_sum = rank_sum = 0.0
        if governor is not None:
            governor.restart()
        for batch, s in enumerate(range(0, r, bs)):
            t += 1
            sq, rank = step(batch, slice(s, s + bs), one_cycle(t - 1, total, params.lr), t)
            loss_sum += sq
            rank_sum += rank
            if governor is not None:
                governor.step(t)
        loss, rank_sum = float(loss_sum) / r, float(rank_sum)  # the one wait for a GPU an epoch
        if not math.isfinite(loss) or not math.isfinite(rank_sum):
            raise DivergedError(f"training diverged in epoch {epoch + 1}: loss is {loss} (try a lower --lr)")
        step.end_epoch()
        v = _record(history, step.model, valid, loss, rank_sum / r, time.perf_counter() - start)
        if progress is not None:
            progress(epoch + 1, params.epochs, loss, v)
    step.finish()
    if governor is not None:
        history.threads_dropped_at_step = governor.dropped_at
    return history


def cpu_permutation(n: int, gen: torch.Generator) -> torch.Tensor:
    """A random order of ``n`` ratings drawn from ``gen`` (the steps that have no faster way of their own)."""
    return torch.randperm(n, generator=gen)


def epoch_seed(gen: torch.Generator) -> int:
    """One draw from the fit's generator that seeds an epoch's order (:func:`parallel_permutation`, the GPU's)."""
    return int(torch.randint(0, 2 ** 62, (1,), generator=gen))


def parallel_permutation(n: int, gen: torch.Generator) -> torch.Tensor:
    """A random order of ``n`` ratings computed by every thread (:func:`trainer.kernels.random_permutation`),
    seeded from ``gen``; the same order whatever the thread count."""
    out = np.empty(n, np.int64)
    K.random_permutation(epoch_seed(gen), out)
    return torch.from_numpy(out)


def _record(history: History, model: Model, valid: Ratings | None, loss: float, rank: float,
            seconds: float) -> float | None:
    """Append the epoch to ``history``; return its validation RMSE (None without a validation set)."""
    history.loss.append(loss)
    history.rank.append(rank)
    history.seconds.append(seconds)
    if valid is None or not len(valid):
        return None
    v = rmse(model.predict(valid.user, valid.movie), valid.rating)
    history.valid_rmse.append(v)
    return v
