"""Import MovieLens movies and ratings into the ratings database, in one transaction.

Idempotent: movies are upserted only where something differs, and a rating from a file replaces
the stored one only when it is at least as recent and differs, so importing twice changes
nothing and an old file never overwrites a newer rating made through the API.

The file is parsed and validated in numpy blocks and reduced to one row per (user, movie) in key
order (:mod:`.ratingset`) before anything is written. SQLite then takes ``executemany`` upserts;
PostgreSQL takes binary ``COPY`` (:mod:`.pgload`): a large file into an empty table streams
straight in while it is parsed, anything else goes into a temporary table merged by one
``INSERT ... ON CONFLICT``. Any bad row, an unknown movie id or a
database error rolls the whole import back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import Connection, Engine, func, select, text

from movierec.db.engine import is_postgres
from movierec.db.schema import Movie, Rating

from . import pgload
from .movielens import DataFormatError, MovieRow, RatingChunk, detect_layout, read_movies, read_ratings
from .ratingset import RatingSet, collect

ProgressHook = Callable[[int], None]


@dataclass
class ImportResult:
    """What an import changed."""

    movies_inserted: int = 0
    movies_updated: int = 0
    ratings_read: int = 0
    ratings_inserted: int = 0
    ratings_updated: int = 0
    seconds: float = field(default=0.0)

    @property
    def ratings_unchanged(self) -> int:
        """Rows of the file that left the database as it was."""
        return self.ratings_read - self.ratings_inserted - self.ratings_updated

    def summary(self) -> str:
        """One line for the CLI."""
        rate = self.ratings_read / self.seconds if self.seconds else 0.0
        return (
            f"movies: {self.movies_inserted} new, {self.movies_updated} updated; "
            f"ratings: {self.ratings_read} read, {self.ratings_inserted} new, {self.ratings_updated} updated, "
            f"{self.ratings_unchanged} unchanged; {self.seconds:.1f} s ({rate:,.0f} ratings/s)"
        )


RatingsStep = Callable[[Connection, Path, np.ndarray, ImportResult, ProgressHook | None], None]


def import_movielens(engine: Engine, directory: Path, *, on_bytes: ProgressHook | None = None,
                     ratings_step: RatingsStep | None = None) -> ImportResult:
    """Import the movies and ratings of a MovieLens directory (100K, 1M or CSV layout).

    ``ratings_step`` replaces the ratings loader (bench/import_speed.py passes the previous one).
    """
    layout = detect_layout(directory)
    movies = read_movies(layout.movies)
    started = time.perf_counter()
    result = ImportResult()
    with engine.begin() as conn:
        result.movies_inserted, result.movies_updated = _upsert_movies(conn, movies)
        (ratings_step or _import_rating_chunks)(conn, layout.ratings, _known_movie_ids(conn), result, on_bytes)
    result.seconds = time.perf_counter() - started
    return result


def import_ratings(engine: Engine, path: Path, *, on_bytes: ProgressHook | None = None) -> ImportResult:
    """Import a ratings file alone (any MovieLens layout); every movie it names must exist."""
    if not path.is_file():
        raise DataFormatError(path, None, "no such file")
    started = time.perf_counter()
    result = ImportResult()
    with engine.begin() as conn:
        _import_rating_chunks(conn, path, _known_movie_ids(conn), result, on_bytes)
    result.seconds = time.perf_counter() - started
    return result


def _known_movie_ids(conn: Connection) -> np.ndarray:
    return np.fromiter(conn.execute(select(Movie.id).order_by(Movie.id)).scalars(), dtype=np.int64)


def _upsert_movies(conn: Connection, movies: list[MovieRow]) -> tuple[int, int]:
    existing = {row.id: (row.title, row.year, row.genres) for row in conn.execute(select(Movie.id, Movie.title,
                                                                                           Movie.year, Movie.genres))}
    new = [m for m in movies if m.id not in existing]
    changed = [m for m in movies if m.id in existing and existing[m.id] != (m.title, m.year, m.genres)]
    if new:
        conn.execute(Movie.__table__.insert(), [m.__dict__ for m in new])
    if changed:
        conn.execute(
            text("UPDATE movies SET title = :title, year = :year, genres = :genres WHERE id = :id"),
            [m.__dict__ for m in changed],
        )
    return len(new), len(changed)


def _checked(path: Path, chunks: Iterable[RatingChunk], known: np.ndarray) -> Iterator[RatingChunk]:
    for chunk in chunks:
        missing = ~_is_known(chunk.movie_id, known)
        if missing.any():
            first = int(np.argmax(missing))
            raise DataFormatError(
                path, int(chunk.line[first]),
                f"movie id {int(chunk.movie_id[first])} is not in the movies table (import the movies first)",
            )
        yield chunk


#: Largest movie id looked up in a boolean table (one byte per id up to it); beyond, a binary search.
_TABLE_IDS = 1 << 26


def _is_known(ids: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Which of ``ids`` are in the sorted array ``known``."""
    if known.size and known[-1] < _TABLE_IDS:
        table = np.zeros(int(known[-1]) + 2, dtype=bool)
        table[known] = True
        return table[np.minimum(ids, len(table) - 1)]
    at = np.minimum(np.searchsorted(known, ids), max(len(known) - 1, 0))
    return known[at] == ids if known.size else np.zeros(len(ids), dtype=bool)


def _import_rating_chunks(conn: Connection, path: Path, known: np.ndarray, result: ImportResult,
                          on_bytes: ProgressHook | None) -> None:
    chunks = _checked(path, read_ratings(path, default_time=int(time.time()), on_bytes=on_bytes), known)
    if is_postgres(conn.engine):
        # A line of a ratings file is rarely under 16 bytes: a rough count to choose the bulk path by.
        rows_hint = path.stat().st_size // 16
        result.ratings_read, result.ratings_inserted, result.ratings_updated = pgload.load(conn, chunks, rows_hint)
        return
    ratings = collect(chunks)
    result.ratings_read = ratings.read
    result.ratings_inserted, result.ratings_updated = _executemany(conn, ratings)


# Replace a stored rating only with one at least as recent that differs: idempotent, and an old
# file cannot clobber a newer rating made through the API.
_UPSERT_SQLITE = (
    "INSERT INTO ratings (user_id, movie_id, rating, rated_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (user_id, movie_id) DO UPDATE SET rating = excluded.rating, rated_at = excluded.rated_at "
    "WHERE excluded.rated_at >= ratings.rated_at "
    "AND (excluded.rating != ratings.rating OR excluded.rated_at != ratings.rated_at)"
)
#: Rows per ``executemany`` call on SQLite.
SQLITE_ROWS = 200_000


def _executemany(conn: Connection, ratings: RatingSet) -> tuple[int, int]:
    """SQLite: upserts of the unique, key-ordered rows (B-tree appends); (inserted, updated)."""
    before = conn.execute(select(func.count()).select_from(Rating)).scalar_one()
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    touched = 0
    try:
        for user, movie, rating, stamp in ratings.slices(SQLITE_ROWS):
            rows = zip(user.tolist(), movie.tolist(), rating.tolist(), stamp.tolist(), strict=True)
            cursor.executemany(_UPSERT_SQLITE, rows)
            touched += max(cursor.rowcount, 0)
    finally:
        cursor.close()
    inserted = conn.execute(select(func.count()).select_from(Rating)).scalar_one() - before
    return inserted, touched - inserted
