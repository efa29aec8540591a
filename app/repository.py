"""Database queries of the service, one function per question, on a SQLAlchemy session.

Reads return plain tuples or numpy arrays (no ORM objects: cheaper, and nothing lazy escapes the
session). Writes are upserts written for both dialects (``INSERT .. ON CONFLICT DO UPDATE``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Integer, Select, cast, delete, func, literal, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.orm import Session

from movierec.db.schema import Movie, Rating


@dataclass(frozen=True)
class UserRatings:
    """One user's ratings as arrays (any order)."""

    movie_ids: np.ndarray  # int64
    ratings: np.ndarray  # float64
    rated_at: np.ndarray  # int64

    def __len__(self) -> int:
        return int(self.movie_ids.size)

    @property
    def latest(self) -> int | None:
        return int(self.rated_at.max()) if self.rated_at.size else None

    @classmethod
    def from_rows(cls, rows: Sequence[tuple[int, float, int]]) -> UserRatings:
        if not rows:
            return cls(np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros(0, np.int64))
        movie, rating, at = zip(*rows, strict=True)
        return cls(np.asarray(movie, np.int64), np.asarray(rating, np.float64), np.asarray(at, np.int64))


def ping(session: Session) -> None:
    """Raise if the database cannot answer a trivial query."""
    session.execute(select(literal(1))).scalar_one()


def user_ratings(session: Session, user_id: int) -> UserRatings:
    """All ratings of ``user_id`` (a primary-key prefix scan)."""
    rows = session.execute(
        select(Rating.movie_id, Rating.rating, Rating.rated_at).where(Rating.user_id == user_id)
    ).all()
    return UserRatings.from_rows([tuple(r) for r in rows])


#: The one query of GET /recommend's hot path, in each driver's parameter style.
_USER_RATINGS_SQL = {"qmark": "SELECT movie_id, rating, rated_at FROM ratings WHERE user_id = ?",
                     "format": "SELECT movie_id, rating, rated_at FROM ratings WHERE user_id = %s",
                     "pyformat": "SELECT movie_id, rating, rated_at FROM ratings WHERE user_id = %s"}


def user_ratings_raw(connection: DBAPIConnection, paramstyle: str, user_id: int) -> UserRatings:
    """:func:`user_ratings` on a driver connection: the same rows without SQLAlchemy's statement
    compilation, result wrapping and session (most of the time of a /recommend on MovieLens 100K,
    see docs/benchmarks.md). Driver errors are raised as they are; see :mod:`app.user_reads`."""
    cursor = connection.cursor()
    try:
        cursor.execute(_USER_RATINGS_SQL[paramstyle], (user_id,))
        rows = cursor.fetchall()
    finally:
        cursor.close()
    return UserRatings.from_rows(rows)


def many_user_ratings(session: Session, user_ids: Sequence[int]) -> dict[int, UserRatings]:
    """Ratings of several users in one query; users without ratings are absent from the result."""
    if not user_ids:
        return {}
    rows = session.execute(
        select(Rating.user_id, Rating.movie_id, Rating.rating, Rating.rated_at).where(Rating.user_id.in_(user_ids))
    ).all()
    grouped: dict[int, list[tuple[int, float, int]]] = {}
    for user, movie, rating, at in rows:
        grouped.setdefault(int(user), []).append((movie, rating, at))
    return {user: UserRatings.from_rows(group) for user, group in grouped.items()}


def list_user_ratings(session: Session, user_id: int, limit: int, offset: int) -> list[tuple[int, int, float, int]]:
    """A page of a user's ratings, newest first: ``(user_id, movie_id, rating, rated_at)``."""
    rows = session.execute(
        select(Rating.user_id, Rating.movie_id, Rating.rating, Rating.rated_at)
        .where(Rating.user_id == user_id)
        .order_by(Rating.rated_at.desc(), Rating.movie_id)
        .limit(limit).offset(offset)
    ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def existing_movie_ids(session: Session, movie_ids: Sequence[int]) -> set[int]:
    """Which of ``movie_ids`` are in the catalogue."""
    if not movie_ids:
        return set()
    return set(session.execute(select(Movie.id).where(Movie.id.in_(set(movie_ids)))).scalars())


def upsert_ratings(session: Session, rows: Sequence[dict[str, object]]) -> None:
    """Insert ratings, replacing an existing (user, movie) rating. Rows must have unique keys."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        stmt = postgresql.insert(Rating)
    elif dialect == "sqlite":
        stmt = sqlite.insert(Rating)
    else:  # pragma: no cover - only the two supported backends are configured
        raise RuntimeError(f"unsupported database dialect {dialect}")
    stmt = stmt.on_conflict_do_update(
        index_elements=[Rating.user_id, Rating.movie_id],
        set_={"rating": stmt.excluded.rating, "rated_at": stmt.excluded.rated_at},
    )
    session.execute(stmt, list(rows))


#: One lock per SQLite database file, shared by every engine of this process that writes to it.
_SQLITE_WRITERS: dict[str, threading.Lock] = {}
_SQLITE_WRITERS_GUARD = threading.Lock()


def _sqlite_writer_lock(session: Session) -> threading.Lock | None:
    bind = session.get_bind()
    if bind.dialect.name != "sqlite":
        return None
    key = str(bind.url.database or ":memory:")
    with _SQLITE_WRITERS_GUARD:
        return _SQLITE_WRITERS.setdefault(key, threading.Lock())


@contextmanager
def write_transaction(session: Session) -> Iterator[None]:
    """One write transaction: committed when the block ends, rolled back on an error.

    On SQLite, the writers of this process queue on a lock first, then ``BEGIN IMMEDIATE``
    takes SQLite's write lock. pysqlite begins deferred transactions, and a transaction that
    reads and then writes can fail with 'database is locked' *without waiting* when another
    writer committed in between; IMMEDIATE makes it wait instead (writers of other processes,
    such as an import, still queue on SQLite's busy timeout). The process lock is there because
    SQLite's busy handler polls with sleeps that grow to 100 ms: with 16 concurrent writers,
    POST /ratings had a p99 of 1.3 s and some requests past 2 s; a lock hands the database over
    as soon as the previous writer commits. PostgreSQL needs neither.
    """
    lock = _sqlite_writer_lock(session)
    with lock if lock is not None else nullcontext(), session.begin():
        if lock is not None:
            session.connection().exec_driver_sql("BEGIN IMMEDIATE")
        yield


def delete_rating(session: Session, user_id: int, movie_id: int) -> bool:
    """Delete one rating; True if it existed."""
    result = session.execute(delete(Rating).where(Rating.user_id == user_id, Rating.movie_id == movie_id))
    return bool(result.rowcount)


def _movie_filters(stmt: Select, query: str | None, genres: frozenset[str] | None) -> Select:  # type: ignore[type-arg]
    if query:
        # lower() is Unicode-aware on both backends (movierec.db.engine registers it on SQLite).
        stmt = stmt.where(func.lower(Movie.title).contains(query.lower(), autoescape=True))
    if genres:
        # genres is pipe-separated: match a whole genre, case-insensitively; any of the wanted ones.
        padded = literal("|") + func.lower(Movie.genres) + literal("|")
        stmt = stmt.where(or_(*(padded.contains(f"|{name}|", autoescape=True) for name in sorted(genres))))
    return stmt


def search_movies(session: Session, query: str | None, genres: frozenset[str] | None, limit: int,
                  offset: int) -> tuple[int, list[tuple[int, str, int | None, str]]]:
    """Total matching movies and one page of them ordered by id (``genres``: any of them)."""
    total = session.execute(_movie_filters(select(func.count()).select_from(Movie), query, genres)).scalar_one()
    rows = session.execute(
        _movie_filters(select(Movie.id, Movie.title, Movie.year, Movie.genres), query, genres)
        .order_by(Movie.id).limit(limit).offset(offset)
    ).all()
    return int(total), [tuple(r) for r in rows]  # type: ignore[misc]


def get_movie(session: Session, movie_id: int) -> tuple[int, str, int | None, str] | None:
    row = session.execute(select(Movie.id, Movie.title, Movie.year, Movie.genres).where(Movie.id == movie_id)).first()
    return tuple(row) if row is not None else None  # type: ignore[return-value]


def movie_rating_stats(session: Session, movie_id: int) -> tuple[int, float | None]:
    """Number of ratings and mean rating of one movie (uses the movie_id index)."""
    count, mean = session.execute(
        select(func.count(Rating.rating), func.avg(Rating.rating)).where(Rating.movie_id == movie_id)
    ).one()
    return int(count), (float(mean) if mean is not None else None)


def movie_chunks(session: Session, rows_per_chunk: int = 10_000) -> Iterator[list[tuple[int, str, int | None, str]]]:
    """The whole catalogue in id order, ``(id, title, year, genres)`` rows in chunks: streamed, so a
    million movies never sit in memory as one list (loaded once per model version)."""
    result = session.execute(select(Movie.id, Movie.title, Movie.year, Movie.genres).order_by(Movie.id)
                             .execution_options(yield_per=rows_per_chunk))
    for part in result.partitions():
        yield [tuple(r) for r in part]  # type: ignore[misc]


def popularity_stats(session: Session) -> list[tuple[int, str, int | None, str, int, float]]:
    """``(id, title, year, genres, count, mean)`` of every rated movie, in id order: one aggregate scan."""
    per_movie = (
        select(Rating.movie_id, func.count().label("n"), func.avg(Rating.rating).label("mean"))
        .group_by(Rating.movie_id).subquery()
    )
    rows = session.execute(
        select(Movie.id, Movie.title, Movie.year, Movie.genres, per_movie.c.n, per_movie.c.mean)
        .join(per_movie, per_movie.c.movie_id == Movie.id).order_by(Movie.id)
    ).all()
    return [(int(r[0]), r[1], r[2], r[3] or "", int(r[4]), float(r[5])) for r in rows]


def ratings_fingerprint(session: Session) -> tuple[object, ...]:
    """What changes whenever the popularity table would: the ratings' count, their sum and their
    sum weighted by movie id (exact integers, in half stars), the newest ``rated_at``, and the
    movies' count and largest id. One pass over the tables inside the database, a few values out,
    instead of a row per rated movie."""
    half_stars = cast(func.round(Rating.rating * 2), Integer)
    ratings = session.execute(select(func.count(), func.coalesce(func.sum(half_stars), 0),
                                     func.coalesce(func.sum(half_stars * Rating.movie_id), 0),
                                     func.max(Rating.rated_at))).one()
    movies = session.execute(select(func.count(), func.max(Movie.id))).one()
    return tuple(int(v) if v is not None else None for v in (*ratings, *movies))


def users_rated_after(session: Session, after: int) -> list[tuple[int, int]]:
    """``(user_id, latest rated_at)`` of users with a rating newer than ``after`` (rated_at index)."""
    rows = session.execute(
        select(Rating.user_id, func.max(Rating.rated_at)).where(Rating.rated_at > after).group_by(Rating.user_id)
    ).all()
    return [(int(u), int(t)) for u, t in rows]


__all__ = [
    "UserRatings", "delete_rating", "existing_movie_ids", "get_movie",
    "list_user_ratings", "many_user_ratings", "movie_chunks", "movie_rating_stats", "ping", "popularity_stats", "ratings_fingerprint", "search_movies",
    "upsert_ratings", "write_transaction", "user_ratings", "user_ratings_raw", "users_rated_after",
]
