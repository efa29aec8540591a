"""Which factors represent a user: trained, folded in from their current ratings, or none.

Rules (the model's snapshot is ``manifest["data_snapshot"]["max_rated_at"]``):

* known to the model and nothing rated after the snapshot -> the trained factors;
* unknown to the model, or rated after the snapshot -> fold-in from all their ratings in the
  database (ratings of movies the model does not know are ignored);
* no usable ratings -> the trained factors if the model knows the user, else ``None`` (the caller
  falls back to popularity or the baseline).
"""

from __future__ import annotations

from .metrics import Metrics
from .repository import UserRatings
from .scoring import LoadedModel, UserVector


def needs_fold_in(model: LoadedModel, known: bool, ratings: UserRatings) -> bool:
    """True when the trained factors (if any) do not reflect the user's current ratings."""
    if not known:
        return len(ratings) > 0
    latest = ratings.latest
    return latest is not None and model.snapshot_max_rated_at is not None and latest > model.snapshot_max_rated_at


def resolve_user(model: LoadedModel, user_id: int, ratings: UserRatings, metrics: Metrics | None = None,
                 stale: bool = False) -> UserVector | None:
    """The user's vector for ``model`` given their current ratings; None if nothing is known.

    ``stale`` forces a fold-in for a known user (the registry saw them change their ratings, e.g.
    a delete or a rating with an old timestamp, which the snapshot comparison cannot see).
    """
    row = model.user_row(user_id)
    if (stale and len(ratings) > 0) or needs_fold_in(model, row is not None, ratings):
        rows, found = model.movie_rows(ratings.movie_ids)
        if found.any():
            if metrics is not None:
                metrics.foldins.inc()
            return model.fold_in(rows[found], ratings.ratings[found])
    if row is not None:
        return model.trained_user(row)
    return None
