"""Training: ratings in, a trained ``dot`` or ``nn`` model out (:func:`fit`).

The loss is ``MSE(rating) + rank_weight * ranking``; the ranking term (default) is a sampled
softmax of each rating against movies shared by its batch, drawn by popularity with the logQ
correction, or one-negative BPR. Regularisation is L2 per occurrence; the learning rate follows
a one-cycle schedule.

Modules, one job each:

* ``params``    :class:`FitParams`, :func:`defaults_for`, :class:`History` (and the manifest's old key names)
* ``threads``   how many threads train, and the fall-back to one on a busy machine
* ``schedule``  the one-cycle learning rate
* ``sampling``  the ranking term's positives, negatives and batch fraction (:class:`Ranking`)
* ``loop``      the epoch loop every model kind shares, driving a :class:`~trainer.fit.loop.Step`
* ``dot``       the ``dot`` step: compiled kernels (:mod:`trainer.kernels`), huge-page tables
* ``optim``     the ``dot`` step's row-sparse Adam
* ``nn``        the ``nn`` step: autograd and AdamW
* ``engine``    which engine (numba kernels or torch ops) on which device (``--device``, ``--engine``)
* ``torch_dot`` the ``dot`` step in torch ops on one device (GPU, or CPU for tests), and where its rows live
* ``lazy_adam`` the torch engine's row-sparse Adam (the numba engine's semantics, on any device)
* ``sharded``   the ``dot`` step of a distributed job: rows sharded over its processes (torch.distributed)

Determinism: all randomness (init, permutation, negatives) comes from one ``torch.Generator``
seeded with the training seed; the compiled kernels sum each row's gradients in batch order
whatever the thread count, and the BLAS products (and so the whole fit) are deterministic for a
fixed thread count.

How the defaults were chosen (what was measured, and what was tried and not kept): docs/trainer.md.
"""

from __future__ import annotations

import dataclasses

import torch

from trainer.data import Ratings
from trainer.fit.dot import DotStep, warm_up
from trainer.fit.init import Embeddings, copy_into
from trainer.fit.engine import DeviceUnavailableError, Engine, resolve
from trainer.fit.ensemble import combine, fit_ensemble, truncate
from trainer.fit.loop import Progress, Step, run_epochs
from trainer.fit.nn import NNStep
from trainer.fit.params import FitParams, History, defaults_for
from trainer.fit.sampling import NegativeSampler, Ranking, positive_weights, rank_fraction, ranked_rows
from trainer.fit.schedule import one_cycle
from trainer.fit.threads import ThreadGovernor, default_threads, set_threads
from trainer.fit.torch_dot import TorchDotStep
from trainer.models import DotProductBias, EmbeddingNN, global_logit

__all__ = [
    "DeviceUnavailableError", "Embeddings", "Engine", "FitParams", "History", "NegativeSampler", "Progress", "Ranking", "Step",
    "ThreadGovernor", "TorchDotStep", "combine", "default_threads", "defaults_for", "fit", "make_model", "one_cycle",
    "positive_weights", "rank_fraction", "ranked_rows",
    "resolve", "run_epochs", "set_threads", "truncate",
]


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


def fit(train: Ratings, params: FitParams, valid: Ratings | None = None, progress: Progress | None = None,
        engine: Engine | None = None, init: Embeddings | None = None) -> tuple[DotProductBias | EmbeddingNN, History]:
    """Train a model of ``params.model`` kind on ``train`` with ``engine`` (default: numba on the CPU for
    ``dot``); return it and its per-epoch history.

    ``params.ensemble > 1`` (``dot``): that many fits with seeds ``seed, seed + 1, ...``, combined into one
    model of ``factors`` factors whose logits are (the best rank-``factors`` approximation of) their mean
    (:mod:`trainer.fit.ensemble`).
    ``init`` (``nn`` only): start from these ``dot`` embeddings (their factor count wins), kept
    fixed when ``params.freeze_embeddings`` (see :mod:`trainer.fit.init`).
    Raises DivergedError when the loss becomes NaN or infinite (nothing should be published).
    """
    engine = engine or resolve("cpu", "auto", params.model)
    if params.ensemble > 1:
        if params.model != "dot" or init is not None:
            raise ValueError("an ensemble (ensemble > 1) is of dot models trained from scratch")
        return fit_ensemble(train, params, valid, progress,
                            lambda tr, p, v, pr: fit(tr, p, valid=v, progress=pr, engine=engine))
    threads = set_threads()
    gen = torch.Generator().manual_seed(params.seed)
    params = dataclasses.replace(params, batch_size=max(1, min(params.batch_size, len(train))))
    if init is not None:
        if params.model != "nn":
            raise ValueError("only an nn model starts from another model's embeddings")
        params = dataclasses.replace(params, factors=init.factors)
    model = make_model(params, train.n_users, train.n_movies, float(train.rating.mean()) if len(train) else 3.5, gen)
    if init is not None:
        copy_into(model.user_factors, train.user_ids, init.user_factors, init.user_ids)
        copy_into(model.movie_factors, train.movie_ids, init.movie_factors, init.movie_ids)
        if params.freeze_embeddings:
            model.user_factors.requires_grad_(False)
            model.movie_factors.requires_grad_(False)
    ranking = Ranking.of(train, params)
    step: Step
    if isinstance(model, DotProductBias) and engine.kind == "torch":
        step, governor = TorchDotStep(model, train, params, ranking, engine), None
    elif isinstance(model, DotProductBias):
        warm_up(params)  # compile the kernels before the first epoch's clock starts
        step, governor = DotStep(model, train, params, ranking), ThreadGovernor(threads)
    else:  # torch's own ops, not the chain of short parallel loops the governor is for
        step, governor = NNStep(model, train, params, ranking), None
    history = run_epochs(step, train, params, ranking, valid, gen, progress, governor)
    history.threads = threads
    history.engine = engine.label
    return model, history
