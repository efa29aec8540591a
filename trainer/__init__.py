"""movierec offline trainer: ratings -> latent-factor model -> evaluation -> quality gate -> model store.

Modules, one job each:

* ``data``     ratings from the database (streamed) or MovieLens files into contiguous arrays + id maps
* ``split``    the two evaluation protocols (random 10 %, per-user latest 20 %)
* ``models``   the torch models (``dot``, ``nn``) and their export to the store tensors
* ``fit``      training (a package): parameters, thread policy, sampling, one epoch loop, the ``dot`` and ``nn`` steps
* ``metrics``  RMSE/MAE, NDCG/Recall/HR@10 and the baselines
* ``report``   PNGs written into the published version
* ``gate``     the quality gate
* ``pipeline`` load -> evaluate -> refit -> gate -> publish
* ``cli``      the ``movierec train`` command

The trainer never imports FastAPI or ``app``.
"""

from __future__ import annotations


class TrainerError(RuntimeError):
    """An expected failure (bad data, NaN loss, refused by the gate...). The CLI prints the message, no traceback."""

    exit_code = 1


class NoDataError(TrainerError):
    """There is nothing (or too little) to train on."""

    exit_code = 2


class GateRefusedError(TrainerError):
    """The candidate is worse than the current model by more than the tolerance."""

    exit_code = 3


class DivergedError(TrainerError):
    """The loss became NaN or infinite: nothing is published."""

    exit_code = 4
