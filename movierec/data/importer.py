"""Import MovieLens movies and ratings into the ratings database, in one transaction.

Idempotent: movies are upserted only where something differs, and a rating from a file replaces
the stored one only when it is at least as recent and differs, so importing twice changes
nothing and an old file never overwrites a newer rating made through the API.

SQLite takes ``executemany`` upserts; PostgreSQL takes ``COPY`` into a temporary table and one
``INSERT ... SELECT ... ON CONFLICT``, which keeps 25 million rows to minutes. Any bad row, an
unknown movie id or a database error rolls the whole import back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import Connection, Engine, func, select, text
from sqlalchemy.schema import AddConstraint, DropConstraint

from movierec.db.engine import is_postgres
from movierec.db.schema import Movie, Rating

from .movielens import DataFormatError, MovieRow, RatingChunk, detect_layout, read_movies, read_ratings

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


def import_movielens(engine: Engine, directory: Path, *, on_bytes: ProgressHook | None = None) -> ImportResult:
    """Import the movies and ratings of a MovieLens directory (100K, 1M or CSV layout)."""
    layout = detect_layout(directory)
    movies = read_movies(layout.movies)
    started = time.perf_counter()
    result = ImportResult()
    with engine.begin() as conn:
        result.movies_inserted, result.movies_updated = _upsert_movies(conn, movies)
        _import_rating_chunks(conn, layout.ratings, _known_movie_ids(conn), result, on_bytes)
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
        missing = ~np.isin(chunk.movie_id, known)
        if missing.any():
            first = int(np.argmax(missing))
            raise DataFormatError(
                path, int(chunk.line[first]),
                f"movie id {int(chunk.movie_id[first])} is not in the movies table (import the movies first)",
            )
        yield chunk


def _import_rating_chunks(conn: Connection, path: Path, known: np.ndarray, result: ImportResult,
                          on_bytes: ProgressHook | None) -> None:
    chunks = _checked(path, read_ratings(path, default_time=int(time.time()), on_bytes=on_bytes), known)
    before = conn.execute(select(func.count()).select_from(Rating)).scalar_one()
    if is_postgres(conn.engine):
        read, touched = _copy_postgres(conn, chunks, before)
    else:
        read, touched = _executemany(conn, chunks)
    after = conn.execute(select(func.count()).select_from(Rating)).scalar_one()
    result.ratings_read = read
    result.ratings_inserted = after - before
    result.ratings_updated = touched - result.ratings_inserted


# Replace a stored rating only with one at least as recent that differs: idempotent, and an old
# file cannot clobber a newer rating made through the API.
_UPSERT_SQLITE = (
    "INSERT INTO ratings (user_id, movie_id, rating, rated_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (user_id, movie_id) DO UPDATE SET rating = excluded.rating, rated_at = excluded.rated_at "
    "WHERE excluded.rated_at >= ratings.rated_at "
    "AND (excluded.rating != ratings.rating OR excluded.rated_at != ratings.rated_at)"
)


def _executemany(conn: Connection, chunks: Iterable[RatingChunk]) -> tuple[int, int]:
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    read = touched = 0
    try:
        for chunk in chunks:
            rows = zip(chunk.user_id.tolist(), chunk.movie_id.tolist(), chunk.rating.tolist(),
                       chunk.rated_at.tolist(), strict=True)
            cursor.executemany(_UPSERT_SQLITE, rows)
            touched += max(cursor.rowcount, 0)
            read += len(chunk)
    finally:
        cursor.close()
    return read, touched


def _copy_postgres(conn: Connection, chunks: Iterable[RatingChunk], existing: int) -> tuple[int, int]:
    conn.execute(text(
        "CREATE TEMPORARY TABLE import_ratings (user_id integer, movie_id integer, rating double precision, "
        "rated_at bigint, line bigint) ON COMMIT DROP"
    ))
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    read = 0
    with cursor.copy("COPY import_ratings (user_id, movie_id, rating, rated_at, line) FROM STDIN") as copy:
        for chunk in chunks:
            block = "".join(
                f"{u}\t{m}\t{r}\t{t}\t{n}\n"
                for u, m, r, t, n in zip(chunk.user_id.tolist(), chunk.movie_id.tolist(), chunk.rating.tolist(),
                                         chunk.rated_at.tolist(), chunk.line.tolist(), strict=True)
            )
            copy.write(block)
            read += len(chunk)
    bulk = read >= BULK_ROWS and read >= existing
    if bulk:
        _drop_secondary(conn)
    # A file may rate the same movie twice for a user: the latest rating wins, then the later line.
    touched = conn.execute(text(
        "INSERT INTO ratings (user_id, movie_id, rating, rated_at) "
        "SELECT DISTINCT ON (user_id, movie_id) user_id, movie_id, rating, rated_at FROM import_ratings "
        "ORDER BY user_id, movie_id, rated_at DESC, line DESC "
        "ON CONFLICT (user_id, movie_id) DO UPDATE SET rating = excluded.rating, rated_at = excluded.rated_at "
        "WHERE excluded.rated_at >= ratings.rated_at "
        "AND (excluded.rating <> ratings.rating OR excluded.rated_at <> ratings.rated_at)"
    )).rowcount
    if bulk:
        _restore_secondary(conn)
    return read, max(touched, 0)


# Maintaining the secondary indexes and checking the foreign key row by row costs about two thirds
# of a large load; building them once afterwards is several times cheaper. PostgreSQL DDL is
# transactional, so a failed import still leaves them exactly as they were. The table is locked
# for the length of the import, which is why small imports take the row-by-row path.
BULK_ROWS = 500_000


def _secondary() -> tuple[list, list]:
    table = Rating.__table__
    indexes = sorted(table.indexes, key=lambda ix: ix.name)
    foreign = [fk.constraint for fk in table.foreign_keys]
    return indexes, foreign


def _drop_secondary(conn: Connection) -> None:
    indexes, foreign = _secondary()
    for constraint in foreign:
        conn.execute(DropConstraint(constraint))
    for index in indexes:
        index.drop(conn)


def _restore_secondary(conn: Connection) -> None:
    indexes, foreign = _secondary()
    for index in indexes:
        index.create(conn)
    for constraint in foreign:
        conn.execute(AddConstraint(constraint))
