"""movierec's own systems in the accuracy benchmark, scored exactly as the API scores them.

* :class:`OursDot`: the trainer's ``dot`` (``trainer.fit.defaults_for("dot")`` plus overrides); the
  ranking score includes the item-item term when its ``item_blend`` is not 0, as the published
  version does; a new user (cold protocol) is folded in by :class:`app.scoring.LoadedModel` from a
  version built the way ``movierec train`` builds it, and ranked by that version.
* :class:`OursNN`: ``nn`` from scratch, or started from the ``dot`` embeddings trained on the same
  fold, frozen or fine-tuned (``--init-from``, ``--freeze-embeddings``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import Triples
from bench.protocols import as_ratings
from bench.systems import System

#: dot embeddings per (training set, seed), so that the nn variants of a fold start from the
#: dot model the benchmark fitted on that same fold (not from one that saw its test ratings).
_DOT_EMBEDDINGS: dict[tuple[int, int], Any] = {}


def served_model(model: Any, train: Any, term: Any) -> Any:
    """The :class:`app.scoring.LoadedModel` of a model fitted on ``train`` (trainer Ratings), as a
    published version would load: only users with training ratings, plus the item term if any."""
    from app.scoring import LoadedModel
    from movierec.model_format import ModelArtifact, normalize, validate
    from trainer.models import RATING_SCALE, store_tensors

    tensors = store_tensors(model, train.user_ids, train.movie_ids)
    known = np.flatnonzero(np.bincount(train.user, minlength=train.n_users) > 0)
    for name in ("user_ids", "user_factors", "user_bias"):
        tensors[name] = np.ascontiguousarray(tensors[name][known])
    if term is not None:
        tensors.update(term.tensors())
    manifest = {"format_version": 1, "version": 1, "kind": model.kind, "factors": model.factors,
                "y_range": list(model.y_range), "rating_scale": list(RATING_SCALE),
                "global_bias": model.global_bias, "weights_sha256": "-",
                "counts": {"users": len(known), "movies": train.n_movies, "ratings": len(train)},
                "data_snapshot": train.snapshot()}
    validate(manifest, tensors)
    manifest, tensors = normalize(manifest, tensors)
    return LoadedModel(ModelArtifact(1, Path("."), manifest, tensors))


def fold_in_scores(served: Any, given: Triples, users: np.ndarray) -> np.ndarray:
    """Each user's ranking scores after the fold-in of their ``given`` ratings (/recommend's path)."""
    out = np.empty((len(users), given.n_movies), dtype=np.float32)
    for i, u in enumerate(users):
        sel = given.user == u
        rows = given.movie[sel].astype(np.int64)
        vec = served.fold_in(rows, given.rating[sel])
        out[i] = served.rank_scores(vec, rows)
    return out


class _Ours(System):
    kind = "dot"

    def __init__(self, name: str, config: str, **overrides: Any) -> None:
        self.name, self.overrides = name, overrides
        self.config = config + (f" + {overrides}" if overrides else "")

    def params(self, seed: int) -> Any:
        from trainer.fit import defaults_for

        return dataclasses.replace(defaults_for(self.kind), seed=seed, **self.overrides)

    def _finish(self, train: Triples, params: Any, model: Any) -> None:
        from trainer.itemitem import term_for, with_item_term

        self.model, self.params_used = model, params
        self.term = term_for(self.ratings, params)
        self.scorer = with_item_term(model.rank_scores, self.term, train.user, train.movie, train.n_users)
        self._served = None

    def predict(self, users: np.ndarray, movies: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(np.asarray(users), np.asarray(movies)), np.float64)

    def score(self, users: np.ndarray) -> np.ndarray:
        return np.asarray(self.scorer(np.asarray(users)))

    def fold_in(self, given: Triples, users: np.ndarray) -> np.ndarray:
        if self._served is None:
            self._served = served_model(self.model, self.ratings, self.term)
        return fold_in_scores(self._served, given, users)


class OursDot(_Ours):
    """``movierec train --model dot`` (its defaults, item term included, plus ``overrides``)."""

    kind = "dot"

    def __init__(self, name: str = "ours `dot`", **overrides: Any) -> None:
        super().__init__(name, "defaults_for('dot'), as movierec train --model dot", **overrides)

    def fit(self, train: Triples, seed: int) -> OursDot:
        from trainer.fit import Embeddings, fit

        self.ratings = as_ratings(train)
        params = self.params(seed)
        model, _ = fit(self.ratings, params)
        _DOT_EMBEDDINGS[(id(train), seed)] = Embeddings.of_model(model, self.ratings.user_ids,
                                                                 self.ratings.movie_ids)
        self._finish(train, params, model)
        return self


class OursNN(_Ours):
    """``movierec train --model nn``: from scratch, or from the fold's ``dot`` embeddings (frozen or fine-tuned)."""

    kind = "nn"
    MODES = {"scratch": "from scratch", "frozen": "--init-from dot --freeze-embeddings",
             "finetune": "--init-from dot (fine-tuned)"}

    def __init__(self, mode: str = "scratch", **overrides: Any) -> None:
        self.mode = mode
        super().__init__(f"ours `nn` {self.MODES[mode]}", "defaults_for('nn')", **overrides)

    def fit(self, train: Triples, seed: int) -> OursNN:
        from trainer.fit import fit

        self.ratings = as_ratings(train)
        params = self.params(seed)
        init = None
        if self.mode != "scratch":
            key = (id(train), seed)
            if key not in _DOT_EMBEDDINGS:  # the dot row did not run on this fold: fit it here
                OursDot().fit(train, seed)
            init = _DOT_EMBEDDINGS[key]
            params = dataclasses.replace(params, freeze_embeddings=self.mode == "frozen")
        model, _ = fit(self.ratings, params, init=init)
        self._finish(train, params, model)
        return self
