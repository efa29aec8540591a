"""The catalogue: search, details, similar movies (learned factors) and popular movies."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Response, status

from .. import recommendation, repository
from ..catalogue import split_genres, wanted_genres
from ..deps import PopularityDep, RecorderDep, RequiredStateDep, SessionDep, SessionsDep, StateDep
from ..impressions import record_answer
from ..recommendation import UnknownMovieError
from ..schemas import BODY_ERRORS, GENRE_HELP, MAX_ID, Digits, MovieDetail, MoviePage, PopularMovies, SimilarMovies

router = APIRouter(responses=BODY_ERRORS, tags=["movies"])

MoviePath = Annotated[Digits, Path(gt=0, le=MAX_ID, description="Movie id", examples=[50])]
N = Annotated[Digits, Query(ge=1, le=100, description="Number of movies")]


def _movie(row: tuple[int, str, int | None, str]) -> dict[str, object]:
    return {"movie_id": row[0], "title": row[1], "year": row[2], "genres": split_genres(row[3] or "")}


@router.get("/movies", response_model=MoviePage)
def list_movies(
    session: SessionDep,
    query: Annotated[str | None, Query(max_length=200, description="Case-insensitive title substring",
                                       examples=["star wars"])] = None,
    genre: Annotated[str | None, Query(max_length=64, description=GENRE_HELP, examples=["Sci-Fi"])] = None,
    limit: Annotated[Digits, Query(ge=1, le=100)] = 20,
    offset: Annotated[Digits, Query(ge=0, le=10_000_000)] = 0,
) -> dict[str, object]:
    """Search the catalogue by title and genre, ordered by id."""
    total, rows = repository.search_movies(session, query or None, wanted_genres(genre), limit, offset)
    return {"total": total, "limit": limit, "offset": offset, "items": [_movie(r) for r in rows]}


@router.get("/movies/{movie_id}", response_model=MovieDetail, responses={404: {"description": "No such movie"}})
def get_movie(session: SessionDep, state: StateDep, movie_id: MoviePath) -> dict[str, object]:
    """One movie with its rating count, mean rating and whether the current model knows it."""
    row = repository.get_movie(session, movie_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"movie {movie_id} not found")
    count, mean = repository.movie_rating_stats(session, movie_id)
    in_model = state is not None and state.model.movie_row(movie_id) is not None
    return {**_movie(row), "ratings_count": count, "mean_rating": mean, "in_model": in_model}


@router.get("/movies/{movie_id}/similar", response_model=SimilarMovies,
            responses={404: {"description": "Movie unknown to the database or to the model"},
                       503: {"description": "No model loaded"}})
def similar_movies(sessions: SessionsDep, state: RequiredStateDep, recorder: RecorderDep, popularity: PopularityDep,
                   response: Response, movie_id: MoviePath, n: N = 10) -> dict[str, object]:
    """The n movies nearest to this one by cosine similarity of the learned movie factors.

    Served by CURRENT (no user to split on) and recorded under ``request_id`` like /recommend.
    """
    try:
        result = recommendation.similar(state, sessions, movie_id, n, popularity)
    except UnknownMovieError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    stamp = record_answer(recorder, response.headers, user_id=None, model_version=result.model_version,
                          source="model", endpoint="similar", movie_ids=[i.movie_id for i in result.items],
                          role="current")
    return {"movie_id": result.movie_id, "model_version": result.model_version,
            "items": [item.as_dict() for item in result.items], **stamp}


@router.get("/popular", response_model=PopularMovies)
def popular(
    popularity: PopularityDep,
    n: N = 10,
    genre: Annotated[str | None, Query(max_length=64, description=GENRE_HELP)] = None,
    min_year: Annotated[Digits | None, Query(ge=0, le=9999, description="Only movies from this year on")] = None,
) -> dict[str, object]:
    """Most popular movies for anonymous visitors: damped mean rating (cached, refreshed periodically)."""
    return {"items": popularity.top(n, genre=genre, min_year=min_year)}
