"""What a fit is asked to do (:class:`FitParams`, :func:`defaults_for`) and what it reports (:class:`History`).

Both are written into every manifest (``params``, ``history``), so their keys are a format:
a renamed field keeps its old key readable here (:data:`RENAMED_PARAMS`, :data:`RENAMED_HISTORY`).
How the defaults were chosen, with the measurements: docs/trainer.md.
"""

from __future__ import annotations

import dataclasses

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from trainer.models import DEFAULT_Y_RANGE

#: Old manifest keys of :class:`FitParams` fields -> their names now. ``bpr_weight`` weighed the
#: ranking term when that was one-negative BPR; its default is now a sampled softmax.
RENAMED_PARAMS = {"bpr_weight": "rank_weight"}
#: Old manifest keys of :class:`History` fields -> their names now.
RENAMED_HISTORY = {"bpr": "rank"}


@dataclass
class FitParams:
    """Hyper-parameters of one training run (recorded in the manifest)."""

    model: str = "dot"
    factors: int = 64
    epochs: int = 20
    lr: float = 0.01
    wd: float = 0.1
    batch_size: int = 4096
    #: Weight of the ranking term of the loss, ``MSE + rank_weight * ranking`` (0: MSE only).
    rank_weight: float = 0.45
    #: The ranking term: ``softmax`` (sampled softmax over shared negatives) or ``bpr`` (one negative per rating).
    rank_loss: str = "softmax"
    negatives: int = 128
    #: Which ratings are positives of the ranking loss and with what weight (see ``sampling.positive_weights``).
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
    #: Weight of the item-item term in the ranking score (``trainer.itemitem``; 0: none). Chosen by CV.
    item_blend: float = 0.0
    #: L2 strength of the EASE closed form the item term comes from.
    item_lambda: float = 100.0
    #: Entries kept per rated movie (row) of the item term: the serving cost per rated movie.
    item_neighbours: int = 100
    #: ``nn`` only: start from this trained ``dot`` model's embeddings (a store version number or a
    #: version directory), with ``freeze_embeddings`` keeping them fixed; None: random init.
    init_from: str | None = None
    freeze_embeddings: bool = False
    #: ``dot`` only: members trained with seeds ``seed, seed + 1, ...`` and published as one model of
    #: ``factors`` factors whose logits are the best rank-``factors`` approximation of the members' mean
    #: (``trainer.fit.ensemble``). 1: one model.
    ensemble: int = 1
    #: The ensemble applies to data of at most this many ratings; above it one fit is trained (the
    #: members' fits cost ``ensemble`` times the time, and at millions of ratings one fit's noise is
    #: smaller: see :func:`for_data`). None: whatever the data size (an explicit ``--ensemble``).
    ensemble_max_ratings: int | None = None
    #: None: these parameters are used as given. A tuple (``defaults_for('dot')`` gives one): they are
    #: the size-dependent defaults, which :func:`for_data` fits to the data, except the fields named
    #: here (the ones ``movierec train`` was given as options).
    fixed: tuple[str, ...] | None = None
    #: ``dot`` ensembles only: after the members are combined, refit factors and rating biases to the
    #: rating loss alone with an L2 pull of this strength towards the combined model
    #: (``trainer.fit.refit``; 0: none), in ``refit_sweeps`` sweeps of users then movies.
    refit_l2: float = 0.0
    refit_sweeps: int = 2

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> FitParams:
        """Parameters as a manifest records them (old key names included); an unknown key is a TypeError.

        Strict, unlike :meth:`History.from_dict`: parameters that silently lost a key would
        describe another run.
        """
        return cls(**{RENAMED_PARAMS.get(k, k): tuple(v) if isinstance(v, list) else v for k, v in values.items()})


@dataclass
class History:
    """Per-epoch training loss (MSE and ranking parts) and validation RMSE (when a validation set is given)."""

    loss: list[float] = field(default_factory=list)
    #: Mean ranking loss per rating of each epoch (0 when ``rank_weight`` is 0).
    rank: list[float] = field(default_factory=list)
    valid_rmse: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    #: Threads the fit started with (see ``threads.set_threads``).
    threads: int = 1
    #: The step after which it went on with one thread (``threads.ThreadGovernor``), if it did.
    threads_dropped_at_step: int | None = None
    #: Which engine trained, on which device (``engine.Engine.label``): ``numba/cpu``, ``torch/cuda:0``, ...
    engine: str = "numba/cpu"
    #: Processes of a distributed job (1: one process).
    world_size: int = 1
    #: Members of an ensemble (``FitParams.ensemble``): the per-epoch figures are their means.
    members: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> History:
        """A history as a manifest records it (old key names included); keys it does not know are ignored."""
        known = {f.name for f in fields(cls)}
        given = {RENAMED_HISTORY.get(k, k): v for k, v in values.items()}
        return cls(**{k: v for k, v in given.items() if k in known})


#: Largest data (ratings) the default ensemble trains on. Its gain was measured on MovieLens 100K only
#: (docs/trainer.md), and it triples a run's training time (at 2M ratings on 2 cores about one minute
#: becomes three); beyond that the default is one fit and ``--ensemble N`` asks for more.
ENSEMBLE_MAX_RATINGS = 2_000_000
#: The ranking weight, learning rate and item-term blend of one ``dot`` model, chosen for one model
#: (docs/trainer.md). The default ensemble trains with a lighter ranking term (``defaults_for``), which
#: costs ranking unless the item term carries it: without the ensemble or the term these apply.
ONE_FIT = {"rank_weight": 0.45, "lr": 0.01, "item_blend": 0.5}


def for_data(params: FitParams, n_ratings: int, n_movies: int | None = None) -> FitParams:
    """``params`` fitted to data of ``n_ratings`` ratings of ``n_movies`` movies.

    One fit instead of the ensemble above ``ensemble_max_ratings``. For the size-dependent defaults
    (``fixed`` not None), a fit that is one model, or whose version gets no item term (more than
    ``trainer.itemitem.MAX_MOVIES`` movies), takes :data:`ONE_FIT`'s ranking weight, learning rate and
    blend instead of the ensemble's lighter ranking term, except the fields named in ``fixed``. Every
    process of a distributed job calls it with the same counts.
    """
    sized = params
    if params.ensemble > 1 and params.ensemble_max_ratings is not None and n_ratings > params.ensemble_max_ratings:
        sized = dataclasses.replace(sized, ensemble=1)
    if sized.fixed is not None and sized.model == "dot":
        from trainer.itemitem import MAX_MOVIES

        if sized.ensemble == 1 or (n_movies is not None and n_movies > MAX_MOVIES):
            sized = dataclasses.replace(sized, **{k: v for k, v in ONE_FIT.items() if k not in sized.fixed})
    return sized


def defaults_for(kind: str) -> FitParams:
    """The default parameters of each model kind (what ``movierec train`` uses without options)."""
    if kind == "dot":
        # The ensemble of 3 with a lighter ranking term and learning rate and the item term weighted more
        # (it gives the ranking back), the item term's lambda and neighbours: chosen on the tuning folds
        # (docs/trainer.md). for_data() gives one fit, or a version without item term, ONE_FIT's values.
        return FitParams(model="dot", rank_weight=0.3, lr=0.007, item_blend=1.0, item_lambda=200.0,
                         item_neighbours=50, ensemble=3, ensemble_max_ratings=ENSEMBLE_MAX_RATINGS, fixed=())
    if kind == "nn":
        # Every (rating, negative) pair runs the MLP, so the ranking term takes 64 negatives and a
        # quarter of each batch at any data size (docs/trainer.md).
        return FitParams(model="nn", factors=32, epochs=15, lr=0.01, wd=0.01, batch_size=1024, rank_weight=0.5,
                         hidden=(64,), negatives=64, rank_sample=0.25, rank_sample_min=0)
    raise ValueError(f"unknown model kind {kind!r} (expected dot or nn)")
