"""Top-n recommendations for a user, personalised whenever anything is known about them."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, HTTPException, Query, Request, status

from .. import repository
from ..deps import PopularityDep, SessionDep, StateDep
from ..personalize import needs_fold_in, resolve_user
from ..schemas import BODY_ERRORS, GENRE_HELP, MAX_ID, Digits, Recommendation

router = APIRouter(responses=BODY_ERRORS, tags=["recommendations"])


def parse_ids(values: list[str], name: str) -> set[int]:
    """Movie ids from repeated and/or comma-separated query values (``exclude=1,2&exclude=3``)."""
    out: set[int] = set()
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            if not (part.isascii() and part.isdigit()) or not 0 < int(part) <= MAX_ID:
                raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                                    f"{name} must be positive integer movie ids, got {part!r}")
            out.add(int(part))
    return out


@router.get("/recommend", response_model=Recommendation,
            responses={422: {"description": "Invalid parameters"}, 503: {"description": "Database unavailable"}})
def recommend(
    request: Request,
    session: SessionDep,
    state: StateDep,
    popularity: PopularityDep,
    user_id: Annotated[Digits, Query(gt=0, le=MAX_ID, description="User id", examples=[196])],
    n: Annotated[Digits, Query(ge=1, le=100, description="Number of movies")] = 10,
    genre: Annotated[str | None, Query(max_length=64, description=GENRE_HELP, examples=["Comedy"])] = None,
    exclude: Annotated[list[str], Query(description="Movie ids to leave out (repeat or comma-separate)")] = [],  # noqa: B006
    min_year: Annotated[Digits | None, Query(ge=0, le=9999, description="Only movies from this year on")] = None,
) -> dict[str, object]:
    """The user's top-n movies among those they have not rated.

    Ranked by the model's embeddings (``u·m + rank_bias``). Users unknown to the model or who
    rated since it was trained are folded in from their current ratings (no retrain needed);
    users with no ratings get the most popular movies with ``personalized: false``.
    """
    excluded = parse_ids(exclude, "exclude")
    # One indexed query: what to exclude, and whether the trained factors are still current.
    ratings = repository.user_ratings(session, user_id)
    session.close()  # hand the connection back before the numpy work
    excluded.update(int(m) for m in ratings.movie_ids)
    if state is not None:
        model = state.model
        stale = user_id in state.stale_users or needs_fold_in(model, model.user_row(user_id) is not None, ratings)
        user = resolve_user(model, user_id, ratings, request.app.state.metrics, stale=stale)
        if user is not None:
            scores = model.rank_scores(user)
            allowed = model.allowed_mask(genre, min_year)
            if excluded:
                rows, found = model.movie_rows(np.fromiter(excluded, dtype=np.int64, count=len(excluded)))
                allowed[rows[found]] = False
            rows, top = model.top_n(scores, n, allowed)
            return {"user_id": user_id, "model_version": model.version, "personalized": True,
                    "source": user.source, "items": model.items(rows, top)}
    items = popularity.top(n, genre=genre, min_year=min_year, exclude=excluded)
    return {"user_id": user_id, "model_version": state.model.version if state is not None else None,
            "personalized": False, "source": "popularity", "items": items}
