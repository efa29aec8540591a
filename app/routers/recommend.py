"""Top-n recommendations for a user, personalised whenever anything is known about them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response, status

from .. import recommendation, repository
from ..deps import MetricsDep, PopularityDep, RecorderDep, SessionDep, UserServingDep
from ..impressions import record_answer
from ..recommendation import Filters
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
    session: SessionDep,
    serving: UserServingDep,
    popularity: PopularityDep,
    metrics: MetricsDep,
    recorder: RecorderDep,
    response: Response,
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

    Each answer has a ``request_id`` (also in ``X-Request-ID``) under which it is recorded for the
    online metrics, and says which version served it (``model_version``, ``served_by``: ``current``,
    or ``candidate`` for the users of a candidate version's share; headers ``X-Model-Version``,
    ``X-Model-Role``).
    """
    filters = Filters(genre=genre, min_year=min_year, exclude=parse_ids(exclude, "exclude"))
    # One indexed query: what to exclude, and whether the trained factors are still current.
    ratings = repository.user_ratings(session, user_id)
    session.close()  # hand the connection back before the numpy work
    state, role = serving
    result = recommendation.recommend(state, popularity, user_id, ratings, n, filters, metrics)
    stamp = record_answer(recorder, response.headers, user_id=user_id, model_version=result.model_version,
                          source=result.source, endpoint="recommend", movie_ids=[i.movie_id for i in result.items],
                          role=role)
    return {"user_id": result.user_id, "model_version": result.model_version, "personalized": result.personalized,
            "source": result.source, "items": [item.as_dict() for item in result.items], **stamp}
