"""Storing, listing and deleting ratings. Writes need the API key when one is configured."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request, Response, status

from .. import repository
from ..deps import RegistryDep, SessionDep, SettingsDep
from ..limits import enforce_batch_limit
from ..schemas import BODY_ERRORS, MAX_ID, Digits, RatingBatch, RatingIn, RatingOut
from ..security import require_api_key

router = APIRouter(responses=BODY_ERRORS, tags=["ratings"])

UserPath = Annotated[Digits, Path(gt=0, le=MAX_ID, description="User id")]
MoviePath = Annotated[Digits, Path(gt=0, le=MAX_ID, description="Movie id")]


@router.post(
    "/ratings", status_code=status.HTTP_201_CREATED, response_model=RatingOut | list[RatingOut],
    dependencies=[Depends(require_api_key), Depends(enforce_batch_limit)],
    responses={401: {"description": "Missing or wrong X-API-Key"}, 404: {"description": "Unknown movie"},
               413: {"description": "Body too large"}, 422: {"description": "Invalid rating"}},
)
def post_ratings(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    registry: RegistryDep,
    body: Annotated[RatingIn | RatingBatch, Body(
        description="One rating or a list (stored in one transaction: all or nothing).",
        examples=[{"user_id": 944, "movie_id": 50, "rating": 4.5},
                  [{"user_id": 944, "movie_id": 50, "rating": 4.5}, {"user_id": 944, "movie_id": 181, "rating": 4}]])],
) -> RatingOut | list[dict[str, object]] | dict[str, object]:
    """Store ratings; a re-rating of the same movie replaces the old one (upsert).

    Returns what was stored (with ``rated_at`` filled in). In a list, a later entry for the same
    (user, movie) wins and only it is returned.
    """
    single = isinstance(body, RatingIn)
    items = [body] if single else body
    if len(items) > settings.max_batch:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            f"at most {settings.max_batch} ratings per request, got {len(items)}")
    if not items:
        return []
    now = int(time.time())
    # One row per key: PostgreSQL refuses an upsert touching the same row twice.
    rows: dict[tuple[int, int], dict[str, object]] = {}
    for item in items:
        key = (item.user_id, item.movie_id)
        rows.pop(key, None)
        rows[key] = {"user_id": item.user_id, "movie_id": item.movie_id, "rating": float(item.rating),
                     "rated_at": item.rated_at if item.rated_at is not None else now}
    stored = list(rows.values())
    with repository.write_transaction(session):
        movie_ids = sorted({key[1] for key in rows})
        missing = set(movie_ids) - repository.existing_movie_ids(session, movie_ids)
        if missing:
            raise HTTPException(status.HTTP_404_NOT_FOUND,
                                f"movie(s) not found: {', '.join(map(str, sorted(missing)[:20]))}")
        repository.upsert_ratings(session, stored)
    # The trained factors of these users no longer reflect their ratings: fold them in from now on.
    registry.mark_stale({key[0] for key in rows})
    return stored[0] if single else stored


@router.get("/users/{user_id}/ratings", response_model=list[RatingOut])
def list_ratings(
    session: SessionDep,
    user_id: UserPath,
    limit: Annotated[Digits, Query(ge=1, le=10_000)] = 1000,
    offset: Annotated[Digits, Query(ge=0, le=10_000_000)] = 0,
) -> list[dict[str, object]]:
    """A user's ratings, newest first (empty list for a user without ratings)."""
    return [{"user_id": u, "movie_id": m, "rating": r, "rated_at": t}
            for u, m, r, t in repository.list_user_ratings(session, user_id, limit, offset)]


@router.delete("/users/{user_id}/ratings/{movie_id}", status_code=status.HTTP_204_NO_CONTENT,
               dependencies=[Depends(require_api_key)],
               responses={401: {"description": "Missing or wrong X-API-Key"}, 404: {"description": "No such rating"}})
def delete_rating(request: Request, session: SessionDep, registry: RegistryDep, user_id: UserPath,
                  movie_id: MoviePath) -> Response:
    """Remove one rating; 404 if the user had not rated that movie."""
    with repository.write_transaction(session):
        found = repository.delete_rating(session, user_id, movie_id)
    if not found:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"user {user_id} has no rating of movie {movie_id}")
    registry.mark_stale({user_id})
    return Response(status_code=status.HTTP_204_NO_CONTENT)
