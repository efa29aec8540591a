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
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Body, Depends, HTTPException, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from .. import repository
from ..deps import RequiredStateDep, require_state_now
from ..limits import enforce_batch_limit
from ..model_registry import ServingState
from ..personalize import resolve_user
from ..schemas import BODY_ERRORS, MAX_ID, Digits, PredictBatch, Prediction, PredictRequest
from ..serving import UserVector

router = APIRouter(responses=BODY_ERRORS, tags=["predictions"])

_ERRORS = {404: {"description": "Movie unknown to the database or to the model"},
           503: {"description": "No model loaded or database unavailable"}}


def _check_movies(request: Request, state: ServingState, movie_ids: np.ndarray, rows: np.ndarray,
                  found: np.ndarray) -> None:
    """404 for movies the model cannot score, telling apart 'no such movie' and 'not in the model'."""
    model = state.model
    ok = found & model.in_catalogue[rows]
    if ok.all():
        return
    suspects = sorted({int(m) for m in movie_ids[~ok]})
    with request.app.state.sessions() as session:
        in_db = repository.existing_movie_ids(session, suspects)
    absent = [m for m in suspects if m not in in_db]
    if absent:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"movie(s) not found: {', '.join(map(str, absent[:20]))}")
    unknown = [m for m in suspects if model.movie_row(m) is None]
    if unknown:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"movie(s) {', '.join(map(str, unknown[:20]))} are in the catalogue but not in model version "
            f"{model.version} (added after training); no prediction until a model trained on them is published",
        )


def _users_from_db(request: Request, state: ServingState, user_ids: list[int]) -> dict[int, UserVector]:
    """Vectors of users whose trained factors cannot be used as they are (unknown or stale)."""
    model = state.model
    with request.app.state.sessions() as session:
        by_user = repository.many_user_ratings(session, user_ids)
    metrics = request.app.state.metrics
    out = {}
    empty = repository.UserRatings.from_rows([])
    for user_id in user_ids:
        vector = resolve_user(model, user_id, by_user.get(user_id, empty), metrics,
                              stale=user_id in state.stale_users)
        out[user_id] = vector if vector is not None else model.baseline_user()
    return out


class PredictQuery(BaseModel):
    """The query of GET /predict (validated by :func:`_query_ids`, documented from this model)."""

    user_id: Digits = Field(gt=0, le=MAX_ID, description="User id", examples=[196])
    movie_id: Digits = Field(gt=0, le=MAX_ID, description="Movie id", examples=[242])


def _openapi_query(model: type[BaseModel]) -> list[dict[str, Any]]:
    """OpenAPI ``parameters`` entries for a model's fields as query parameters, as FastAPI writes them."""
    schema = model.model_json_schema()
    return [{"name": name, "in": "query", "required": name in schema.get("required", []), "schema": prop,
             **({"description": prop["description"]} if "description" in prop else {})}
            for name, prop in schema["properties"].items()]


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
    if user is not None and movie is not None and user.isascii() and user.isdigit() and movie.isascii() \
            and movie.isdigit() and len(user) <= 10 and len(movie) <= 10:
        user_id, movie_id = int(user), int(movie)
        if 0 < user_id <= MAX_ID and 0 < movie_id <= MAX_ID:
            return user_id, movie_id
    given = {k: v for k, v in (("user_id", user), ("movie_id", movie)) if v is not None}
    try:
        parsed = PredictQuery.model_validate(given)
    except ValidationError as exc:
        errors = []
        for error in exc.errors(include_url=False):
            error = {**error, "loc": ("query", *error["loc"])}
            if error["type"] == "missing":
                error["input"] = None  # as FastAPI reports a missing parameter
            errors.append(error)
        raise RequestValidationError(errors) from None
    return parsed.user_id, parsed.movie_id


@router.get("/predict", response_model=Prediction, openapi_extra={"parameters": _openapi_query(PredictQuery)},
            responses={**_ERRORS, 422: {"description": "Validation Error", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/HTTPValidationError"}}}}})
async def predict_one(request: Request) -> Response:
    """Predicted rating of one movie by one user (0.5..5).

    Users the model does not know, or who rated since it was trained, are folded in from their
    current ratings; users with no ratings get the baseline (global + movie bias).
    """
    user_id, movie_id = _query_ids(request)
    # The serving state is read here rather than through RequiredStateDep: resolving a
    # sub-dependency is a measurable share of this endpoint's cost too.
    state = require_state_now(request)
    model = state.model
    movie_row = model.movie_row(movie_id)
    if movie_row is None or not model.in_catalogue[movie_row]:
        rows, found = model.movie_rows(np.array([movie_id]))
        await run_in_threadpool(_check_movies, request, state, np.array([movie_id]), rows, found)
        movie_row = int(rows[0])
    user_row = model.user_row(user_id)
    if user_row is not None and user_id not in state.stale_users:
        user = model.trained_user(user_row)
    else:
        user = (await run_in_threadpool(_users_from_db, request, state, [user_id]))[user_id]
    rating = model.predict_one(user, movie_row)
    # Serialised here: every field is already the right type, and skipping the response model's
    # validation and jsonable_encoder is a third of this endpoint's cost (the schema still
    # documents it in OpenAPI).
    return Response(json.dumps({"user_id": user_id, "movie_id": movie_id, "rating": rating,
                                "model_version": model.version, "personalized": user.personalized}),
                    media_type="application/json")


def _predict_batch(request: Request, state: ServingState, items: list[PredictRequest]) -> list[dict[str, object]]:
    model = state.model
    user_ids = np.fromiter((i.user_id for i in items), dtype=np.int64, count=len(items))
    movie_ids = np.fromiter((i.movie_id for i in items), dtype=np.int64, count=len(items))
    movie_rows, found = model.movie_rows(movie_ids)
    _check_movies(request, state, movie_ids, movie_rows, found)

    unique_users, inverse = np.unique(user_ids, return_inverse=True)
    user_rows, known = model.user_rows(unique_users)
    vecs = np.empty((unique_users.size, model.k), dtype=np.float32)
    bias = np.empty(unique_users.size, dtype=np.float64)
    personalized = np.ones(unique_users.size, dtype=bool)
    stale = np.array([int(u) in state.stale_users for u in unique_users], dtype=bool)
    direct = known & ~stale
    vecs[direct] = model.user_factors[user_rows[direct]]
    bias[direct] = model.user_bias[user_rows[direct]]
    need = np.flatnonzero(~direct)
    if need.size:
        solved = _users_from_db(request, state, [int(unique_users[i]) for i in need])
        for i in need:
            vector = solved[int(unique_users[i])]
            vecs[i], bias[i], personalized[i] = vector.vec, vector.bias, vector.personalized
    ratings = model.predict(vecs[inverse], bias[inverse], movie_rows)
    return [
        {"user_id": int(u), "movie_id": int(m), "rating": float(r), "model_version": model.version,
         "personalized": bool(p)}
        for u, m, r, p in zip(user_ids, movie_ids, ratings, personalized[inverse], strict=True)
    ]


@router.post("/predict", response_model=list[Prediction], responses=_ERRORS,
             dependencies=[Depends(enforce_batch_limit)])
async def predict_many(
    request: Request,
    state: RequiredStateDep,
    items: Annotated[PredictBatch, Body(
        description="Pairs to predict, at most MOVIEREC_MAX_BATCH.",
        examples=[[{"user_id": 196, "movie_id": 242}, {"user_id": 186, "movie_id": 302}]])],
) -> list[dict[str, object]]:
    """Predicted ratings for a list of (user, movie) pairs, answered in the same order."""
    limit = request.app.state.settings.max_batch
    if len(items) > limit:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"at most {limit} pairs per request, got {len(items)}")
    if not items:
        return []
    return await run_in_threadpool(_predict_batch, request, state, items)
