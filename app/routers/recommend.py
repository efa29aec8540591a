"""Top-n recommendations for a user, personalised whenever anything is known about them."""

from __future__ import annotations

import json

from fastapi import APIRouter, HTTPException, Request, Response, status
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from .. import recommendation
from ..impressions import ImpressionRecorder, record_answer
from ..metrics import Metrics
from ..model_registry import ServingState
from ..popularity import Popularity
from ..recommendation import Filters
from ..schemas import BODY_ERRORS, GENRE_HELP, MAX_ID, Digits, Recommendation
from ..user_reads import UserRatingsReader
from .query import openapi_parameters, plain_int, validate_query

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


class RecommendQuery(BaseModel):
    """The query of GET /recommend (parsed by :func:`recommend_query`, documented from this model)."""

    user_id: Digits = Field(gt=0, le=MAX_ID, description="User id", examples=[196])
    n: Digits = Field(10, ge=1, le=100, description="Number of movies")
    genre: str | None = Field(None, max_length=64, description=GENRE_HELP, examples=["Comedy"])
    exclude: list[str] = Field(default_factory=list, description="Movie ids to leave out (repeat or comma-separate)")
    min_year: Digits | None = Field(None, ge=0, le=9999, description="Only movies from this year on")
    explain: bool = Field(False, description="Add `because` to each item: the user's rated movies that raised "
                                             "its score most (docs/api.md)")


#: The spellings of ``explain`` read without pydantic (pydantic's lax bool takes more; those go to it).
_PLAIN_BOOLS = {"true": True, "false": False, "1": True, "0": False}


def recommend_query(request: Request) -> RecommendQuery:
    """GET /recommend's query, accepted and refused exactly as declared ``Query`` parameters would
    be (see :mod:`app.routers.query`); the common spelling without pydantic."""
    query = request.query_params
    user, count, genre, year = query.get("user_id"), query.get("n"), query.get("genre"), query.get("min_year")
    user_id = plain_int(user, 1, MAX_ID)
    n = 10 if count is None else plain_int(count, 1, 100)
    min_year = None if year is None else plain_int(year, 0, 9999)
    exclude = query.getlist("exclude")
    flag = query.get("explain")
    explain = False if flag is None else _PLAIN_BOOLS.get(flag)
    if user_id is not None and n is not None and (year is None or min_year is not None) \
            and (genre is None or len(genre) <= 64) and explain is not None:
        return RecommendQuery.model_construct(user_id=user_id, n=n, genre=genre, exclude=exclude, min_year=min_year,
                                              explain=explain)
    given: dict[str, object] = {k: v for k, v in (("user_id", user), ("n", count), ("genre", genre),
                                                   ("min_year", year), ("explain", flag)) if v is not None}
    if exclude:
        given["exclude"] = exclude
    return validate_query(RecommendQuery, given)


@router.get("/recommend", response_model=Recommendation, openapi_extra={"parameters": openapi_parameters(RecommendQuery)},
            responses={422: {"description": "Validation Error (a bad `exclude` id: a one-message detail)",
                             "content": {"application/json": {"schema": {"anyOf": [
                                 {"$ref": "#/components/schemas/HTTPValidationError"},
                                 {"$ref": "#/components/schemas/ErrorDetail"}]}}}},
                       503: {"description": "Database unavailable"}})
async def recommend(request: Request) -> Response:
    """The user's top-n movies among those they have not rated.

    Ranked by the model's embeddings (``u·m + rank_bias``). Users unknown to the model or who
    rated since it was trained are folded in from their current ratings (no retrain needed);
    users with no ratings get the most popular movies with ``personalized: false``.
    With ``explain=true`` each item says which of the user's ratings it is recommended because of.

    Each answer has a ``request_id`` (also in ``X-Request-ID``) under which it is recorded for the
    online metrics, and says which version served it (``model_version``, ``served_by``: ``current``,
    or ``candidate`` for the users of a candidate version's share; headers ``X-Model-Version``,
    ``X-Model-Role``).
    """
    # Like GET /predict, a measured fast path: the query parsed by hand, the app's state read
    # here rather than through dependencies, the body encoded here (no response-model pass).
    q = recommend_query(request)
    user_id, n = q.user_id, q.n
    filters = Filters(genre=q.genre, min_year=q.min_year, exclude=parse_ids(q.exclude, "exclude"))
    app_state = request.app.state
    state, role = app_state.registry.serving(user_id)  # one version for the whole request
    reader: UserRatingsReader = app_state.user_reads
    args = (reader, state, role, app_state.popularity, app_state.metrics, app_state.recorder, user_id, n, filters,
            q.explain)
    # The user's ratings are read on every request (never a stale exclusion or fold-in); where
    # that read and the scoring are cheap enough they stay on the event loop (see app.user_reads).
    if reader.inline and (state is None or len(state.model.movie_ids) <= INLINE_MAX_MOVIES):
        body, headers = _recommend_body(*args, inline=True)
    else:
        body, headers = await run_in_threadpool(_recommend_body, *args)
    return Response(body, media_type="application/json", headers=headers)


#: Largest catalogue scored on the event loop (SQLite only): about a millisecond of numpy at 100k
#: movies. On 60k movies the loop used less CPU per request than the thread pool and served more
#: (bench/serving.py, both ways in one run, 2 cores); above it the scoring, which numpy runs
#: without the GIL, goes to the thread pool so that one request cannot hold the loop for long.
INLINE_MAX_MOVIES = 100_000


def _recommend_body(reader: UserRatingsReader, state: ServingState | None, role: str, popularity: Popularity,
                    metrics: Metrics, recorder: ImpressionRecorder, user_id: int, n: int, filters: Filters,
                    explain: bool = False, inline: bool = False) -> tuple[bytes, dict[str, str]]:
    """GET /recommend's work: read the user's ratings, rank, record the answer; its body and headers."""
    ratings = reader.read_here(user_id) if inline else reader.read(user_id)
    result = recommendation.recommend(state, popularity, user_id, ratings, n, filters, metrics, explain)
    headers: dict[str, str] = {}
    stamp = record_answer(recorder, headers, user_id=user_id, model_version=result.model_version,
                          source=result.source, endpoint="recommend", movie_ids=[i.movie_id for i in result.items],
                          role=role)
    # Every field already has its JSON type: no response-model validation (a third of the encoding).
    body = json.dumps({"user_id": result.user_id, "model_version": result.model_version,
                       "personalized": result.personalized, "source": result.source,
                       "items": [item.as_dict() for item in result.items], **stamp}).encode()
    return body, headers
