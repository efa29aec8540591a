"""Where a recommendation is put together: the user's vector, the filters, the scoring, the answer.

Between the routers (HTTP only: parse, call, map errors, serialise) and the scorer
(:class:`app.scoring.LoadedModel`, which knows model rows and numbers only). Each entry point
takes the serving state of one model version (model + catalogue + stale users) and returns a
plain result (a dataclass) that the router turns into a response body:

* :func:`recommend` -- the user's top-n among the movies they have not rated, or the most
  popular ones when nothing is known about them;
* :func:`predict_pairs` -- predicted ratings of (user, movie) pairs in one vectorised pass;
* :func:`similar` -- the movies nearest to one movie.

Which vector represents a user (trained, folded in, or none) is decided in
:mod:`app.personalize`. Movies that cannot be scored raise :class:`UnknownMovieError` (a 404).
An answer is assembled here and nowhere else, so what it should carry beyond the response body
(per-item reasons, a request id for recording what was shown) belongs on these result types;
the scorer is reached only through the handful of :class:`~app.scoring.LoadedModel` methods
named in :mod:`app.scoring`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from . import repository
from .explain import Reason, explain_rows
from .metrics import Metrics
from .model_registry import ServingState
from .personalize import resolve_user
from .popularity import Popularity
from .repository import UserRatings
from .scoring import LoadedModel, UserVector

#: Where a recommendation came from: the trained factors, factors folded in from the user's
#: current ratings, or the popularity ranking (nothing known about the user).
RecommendationSource = Literal["model", "fold_in", "popularity"]

#: How many ids an error message lists at most.
_LISTED = 20


class UnknownMovieError(LookupError):
    """A movie the database does not hold or the served model cannot score; the message says which."""


@dataclass(slots=True)
class ScoredMovie:
    """A movie in a ranked list with its score; ``because`` only when an explanation was asked for."""

    movie_id: int
    title: str | None
    year: int | None
    genres: list[str]
    score: float
    ratings_count: int | None = None
    because: list[Reason] | None = None

    def as_dict(self) -> dict[str, Any]:
        out = {"movie_id": self.movie_id, "title": self.title, "year": self.year, "genres": self.genres,
               "score": self.score, "ratings_count": self.ratings_count}
        if self.because is not None:  # the key is absent, not null, when no explanation was asked for
            out["because"] = self.because
        return out


@dataclass(frozen=True)
class Filters:
    """What a list may contain: one genre (case-insensitive), movies from ``min_year`` on, never ``exclude``."""

    genre: str | None = None
    min_year: int | None = None
    exclude: frozenset[int] | set[int] = field(default_factory=frozenset)


@dataclass(frozen=True)
class RecommendationResult:
    """One user's recommendations, best first."""

    user_id: int
    items: list[ScoredMovie]
    source: RecommendationSource
    personalized: bool
    model_version: int | None  # None when no model is loaded (popularity only)


@dataclass(frozen=True)
class SimilarResult:
    """The movies nearest to ``movie_id``, nearest first."""

    movie_id: int
    items: list[ScoredMovie]
    model_version: int


@dataclass(frozen=True)
class PredictionBatch:
    """Predicted ratings of (user, movie) pairs, aligned arrays in the order asked."""

    user_ids: np.ndarray  # int64
    movie_ids: np.ndarray  # int64
    ratings: np.ndarray  # float64, on the rating scale
    personalized: np.ndarray  # bool: False where nothing was known about the user
    model_version: int

    def __len__(self) -> int:
        return int(self.user_ids.size)


# -- recommend ---------------------------------------------------------------------------------


def recommend(state: ServingState | None, popularity: Popularity, user_id: int, ratings: UserRatings, n: int,
              filters: Filters, metrics: Metrics | None = None, explain: bool = False) -> RecommendationResult:
    """The user's top ``n`` movies passing ``filters`` among those they have not rated.

    ``ratings`` are the user's current ratings (what to exclude, and what to fold in when the
    trained factors are missing or out of date). Ranked by the model when it can place the user,
    else by popularity (also when no model is loaded: ``state`` None). ``explain``: each item
    carries the rated movies that raised its score most (:mod:`app.explain`; none for popularity).
    """
    if state is not None:
        model = state.model
        user = resolve_user(model, user_id, ratings, metrics, stale=user_id in state.stale_users)
        if user is not None:
            allowed = state.catalogue.allowed_mask(filters.genre, filters.min_year)
            _disallow(model, allowed, ratings.movie_ids)
            if filters.exclude:
                _disallow(model, allowed, np.fromiter(filters.exclude, dtype=np.int64, count=len(filters.exclude)))
            rated, known = model.movie_rows(ratings.movie_ids)  # the item term's input (scoring.py)
            if model.item_term is not None:  # exact: no index holds the item term (catalogues up to ~12K movies)
                rows, scores = model.top_for_user(user, n, allowed, rated[known])
            else:
                rows, scores = state.ranker.top_for_user(user, n, allowed)
            items = _with_counts(popularity, _scored(state, rows, scores))
            if explain:
                reasons = explain_rows(model, state.catalogue, ratings.movie_ids, ratings.ratings, rows,
                                       rated=(rated, known), user=user)
                for item, because in zip(items, reasons, strict=True):
                    item.because = because
            return RecommendationResult(user_id, items, user.source, True, model.version)
    excluded = set(filters.exclude)
    excluded.update(ratings.movie_ids.tolist())
    top = popularity.top(n, genre=filters.genre, min_year=filters.min_year, exclude=excluded)
    return RecommendationResult(user_id, [ScoredMovie(**item, because=[] if explain else None) for item in top],
                                "popularity", False, state.model.version if state is not None else None)


def _disallow(model: LoadedModel, allowed: np.ndarray, movie_ids: np.ndarray) -> None:
    """Clear the model rows of ``movie_ids`` in ``allowed`` (ids the model lacks are ignored)."""
    if movie_ids.size:
        rows, found = model.movie_rows(movie_ids)
        allowed[rows[found]] = False


# -- similar -----------------------------------------------------------------------------------


def similar(state: ServingState, sessions: sessionmaker[Session], movie_id: int, n: int,
            popularity: Popularity | None = None) -> SimilarResult:
    """The ``n`` movies nearest to ``movie_id`` by cosine similarity of the learned factors."""
    model = state.model
    row = model.movie_row(movie_id)
    if row is None:
        with sessions() as session:
            if repository.get_movie(session, movie_id) is None:
                raise UnknownMovieError(f"movie {movie_id} not found")
        raise UnknownMovieError(f"movie {movie_id} is not in model version {model.version} (added after training)")
    rows, scores = state.ranker.similar(row, n, state.catalogue.allowed_mask())
    items = _scored(state, rows, scores)
    return SimilarResult(movie_id, _with_counts(popularity, items), model.version)


# -- predict -----------------------------------------------------------------------------------


def predict_pairs(state: ServingState, sessions: sessionmaker[Session], pairs: Sequence[tuple[int, int]],
                  metrics: Metrics | None = None) -> PredictionBatch:
    """Predicted ratings of ``(user_id, movie_id)`` pairs; users the model cannot use as trained are
    read from the database (one query for all of them) and folded in, or get the baseline."""
    model = state.model
    user_ids = np.fromiter((u for u, _ in pairs), dtype=np.int64, count=len(pairs))
    movie_ids = np.fromiter((m for _, m in pairs), dtype=np.int64, count=len(pairs))
    movie_rows = scorable_movie_rows(state, sessions, movie_ids)

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
        solved = users_from_db(state, sessions, [int(unique_users[i]) for i in need], metrics)
        for i in need:
            vector = solved[int(unique_users[i])]
            vecs[i], bias[i], personalized[i] = vector.vec, vector.bias, vector.personalized
    ratings = model.predict(vecs[inverse], bias[inverse], movie_rows)
    return PredictionBatch(user_ids, movie_ids, ratings, personalized[inverse], model.version)


def scorable_movie_row(state: ServingState, movie_id: int) -> int | None:
    """The model row of ``movie_id`` when it can be scored as it is (no database needed), else None."""
    row = state.model.movie_row(movie_id)
    return row if row is not None and state.catalogue.in_catalogue[row] else None


def scorable_movie_rows(state: ServingState, sessions: sessionmaker[Session], movie_ids: np.ndarray) -> np.ndarray:
    """Model rows of ``movie_ids``; :class:`UnknownMovieError` for movies the model cannot score,
    telling apart 'no such movie' and 'not in the model' (a database read, only then)."""
    model = state.model
    rows, found = model.movie_rows(movie_ids)
    ok = found & state.catalogue.in_catalogue[rows]
    if ok.all():
        return rows
    suspects = sorted({int(m) for m in movie_ids[~ok]})
    with sessions() as session:
        in_db = repository.existing_movie_ids(session, suspects)
    absent = [m for m in suspects if m not in in_db]
    if absent:
        raise UnknownMovieError(f"movie(s) not found: {', '.join(map(str, absent[:_LISTED]))}")
    unknown = [m for m in suspects if model.movie_row(m) is None]
    if unknown:
        raise UnknownMovieError(
            f"movie(s) {', '.join(map(str, unknown[:_LISTED]))} are in the catalogue but not in model version "
            f"{model.version} (added after training); no prediction until a model trained on them is published")
    return rows  # in the database now and in the model: added to the catalogue after this version loaded


def current_user(state: ServingState, user_id: int) -> UserVector | None:
    """The user's trained vector when it is still current (no database needed), else None."""
    row = state.model.user_row(user_id)
    if row is None or user_id in state.stale_users:
        return None
    return state.model.trained_user(row)


def users_from_db(state: ServingState, sessions: sessionmaker[Session], user_ids: list[int],
                  metrics: Metrics | None = None) -> dict[int, UserVector]:
    """Vectors of users whose trained factors cannot be used as they are (unknown or stale), from
    their current ratings; the baseline for users about whom nothing is known."""
    model = state.model
    with sessions() as session:
        by_user = repository.many_user_ratings(session, user_ids)
    out = {}
    empty = UserRatings.from_rows([])
    for user_id in user_ids:
        vector = resolve_user(model, user_id, by_user.get(user_id, empty), metrics,
                              stale=user_id in state.stale_users)
        out[user_id] = vector if vector is not None else model.baseline_user()
    return out


# -- items -------------------------------------------------------------------------------------


def _with_counts(popularity: Popularity | None, items: list[ScoredMovie]) -> list[ScoredMovie]:
    """``items`` with their ratings counts filled in (from the cached popularity table: no query)."""
    if popularity is None:  # the recommendation layer used on its own, without the app's popularity table
        return items
    for item, count in zip(items, popularity.counts([item.movie_id for item in items]), strict=True):
        item.ratings_count = count
    return items


def _scored(state: ServingState, rows: np.ndarray, scores: np.ndarray) -> list[ScoredMovie]:
    """Catalogue entries of model ``rows`` with their ``scores``."""
    catalogue = state.catalogue
    return [ScoredMovie(int(catalogue.movie_ids[row]), catalogue.titles[row], catalogue.year(row),
                        catalogue.genres[row], score)
            for row, score in zip(rows.tolist(), scores.tolist(), strict=True)]
