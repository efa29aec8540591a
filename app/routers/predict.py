"""Predicted ratings: one pair (GET) or a batch in one vectorised pass (POST).

Movies unknown to the database -> 404. Movies in the database but not in the model (added after
training) -> 404 as well, saying so: the model has no factors or bias for them, and a made-up
number would look like a real prediction.

These endpoints are ``async``: the common case (a user the model knows and who has not rated
since) is a few microseconds of numpy with no I/O, so a thread-pool hop would be most of the
cost. Anything that needs the database runs in the thread pool explicitly.
"""

from __future__ import annotations

import json
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Body, Depends, HTTPException, Request, Response, status
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from .. import recommendation
from ..deps import MetricsDep, RequiredStateDep, SessionsDep, SettingsDep, get_metrics, get_sessions, require_state_now
from ..limits import enforce_batch_limit
from ..metrics import Metrics
from ..model_registry import ServingState
from ..recommendation import UnknownMovieError
from ..schemas import BODY_ERRORS, MAX_ID, Digits, PredictBatch, Prediction, PredictRequest
from .query import openapi_parameters, plain_int, validate_query

router = APIRouter(responses=BODY_ERRORS, tags=["predictions"])

_ERRORS = {404: {"description": "Movie unknown to the database or to the model"},
           503: {"description": "No model loaded or database unavailable"}}


class PredictQuery(BaseModel):
    """The query of GET /predict (validated by :func:`_query_ids`, documented from this model)."""

    user_id: Digits = Field(gt=0, le=MAX_ID, description="User id", examples=[196])
    movie_id: Digits = Field(gt=0, le=MAX_ID, description="Movie id", examples=[242])


def _query_ids(request: Request) -> tuple[int, int]:
    """``user_id`` and ``movie_id`` of GET /predict, accepted and refused exactly as pydantic would.

    Why not FastAPI ``Query`` parameters: for this endpoint, whose own work is ~8 µs, FastAPI
    0.16x's per-request handling of two declared ints cost ~10 % of the throughput (measured with
    wrk against otherwise identical endpoints). The common case, two plain decimal ids in range,
    is parsed here; anything else goes through :class:`PredictQuery` and fails with FastAPI's
    usual 422 detail (``loc`` ``["query", name]``).
    """
    query = request.query_params
    user, movie = query.get("user_id"), query.get("movie_id")
    user_id, movie_id = plain_int(user, 1, MAX_ID), plain_int(movie, 1, MAX_ID)
    if user_id is not None and movie_id is not None:
        return user_id, movie_id
    given = {k: v for k, v in (("user_id", user), ("movie_id", movie)) if v is not None}
    parsed = validate_query(PredictQuery, given)
    return parsed.user_id, parsed.movie_id


@router.get("/predict", response_model=Prediction, openapi_extra={"parameters": openapi_parameters(PredictQuery)},
            responses={**_ERRORS, 422: {"description": "Validation Error", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/HTTPValidationError"}}}}})
async def predict_one(request: Request) -> Response:
    """Predicted rating of one movie by one user (0.5..5).

    Users the model does not know, or who rated since it was trained, are folded in from their
    current ratings; users with no ratings get the baseline (global + movie bias).
    """
    # The measured fast path, the one route that bypasses declared dependencies and the response
    # model (commits f3cb125, 9cce656): the query is parsed by hand (see _query_ids), the serving
    # state is read here rather than through RequiredStateDep (resolving a sub-dependency is a
    # measurable share of this endpoint's cost too), and the body is serialised here. The steps
    # are :mod:`app.recommendation`'s, as POST /predict runs them, one pair at a time.
    user_id, movie_id = _query_ids(request)
    state = require_state_now(request)
    movie_row = recommendation.scorable_movie_row(state, movie_id)
    if movie_row is None:
        sessions = await get_sessions(request)
        try:
            rows = await run_in_threadpool(recommendation.scorable_movie_rows, state, sessions, np.array([movie_id]))
        except UnknownMovieError as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
        movie_row = int(rows[0])
    user = recommendation.current_user(state, user_id)
    if user is None:
        solved = await run_in_threadpool(recommendation.users_from_db, state, await get_sessions(request), [user_id],
                                         await get_metrics(request))
        user = solved[user_id]
    model = state.model
    rating = model.predict_one(user, movie_row)
    # Every field is already the right type, and skipping the response model's validation and
    # jsonable_encoder is a third of this endpoint's cost (the schema still documents it in OpenAPI).
    return Response(json.dumps({"user_id": user_id, "movie_id": movie_id, "rating": rating,
                                "model_version": model.version, "personalized": user.personalized}),
                    media_type="application/json")


def _predict_body(state: ServingState, sessions: sessionmaker[Session], pairs: list[tuple[int, int]],
                  metrics: Metrics) -> list[dict[str, object]]:
    """POST /predict's work, run in the thread pool: the predictions and their response body."""
    batch = recommendation.predict_pairs(state, sessions, pairs, metrics)
    return [
        {"user_id": int(u), "movie_id": int(m), "rating": float(r), "model_version": batch.model_version,
         "personalized": bool(p)}
        for u, m, r, p in zip(batch.user_ids, batch.movie_ids, batch.ratings, batch.personalized, strict=True)
    ]


@router.post("/predict", response_model=list[Prediction], responses=_ERRORS,
             dependencies=[Depends(enforce_batch_limit)])
async def predict_many(
    settings: SettingsDep,
    state: RequiredStateDep,
    sessions: SessionsDep,
    metrics: MetricsDep,
    items: Annotated[PredictBatch, Body(
        description="Pairs to predict, at most MOVIEREC_MAX_BATCH.",
        examples=[[{"user_id": 196, "movie_id": 242}, {"user_id": 186, "movie_id": 302}]])],
) -> list[dict[str, object]]:
    """Predicted ratings for a list of (user, movie) pairs, answered in the same order."""
    if len(items) > settings.max_batch:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            f"at most {settings.max_batch} pairs per request, got {len(items)}")
    if not items:
        return []
    pairs = [(item.user_id, item.movie_id) for item in items]
    try:
        return await run_in_threadpool(_predict_body, state, sessions, pairs, metrics)
    except UnknownMovieError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
