"""The importer and trainer reader as they were before binary COPY: the baseline of bench/import_speed.py.

Kept only so that the benchmark can measure the old and the new code side by side in one run,
on the same machine and load. Import: the file read as text in 200,000-line chunks, each line
split and converted in Python; PostgreSQL got text ``COPY`` of every row into a temporary table
(a Python f-string per row) and one ``INSERT ... SELECT DISTINCT ON ... ON CONFLICT``, with the
secondary indexes and foreign key rebuilt for large imports; SQLite ``executemany`` in file order.
Read: the rows streamed through SQLAlchemy in 65,536-row chunks.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from sqlalchemy import Connection, Engine, func, select, text
from sqlalchemy.schema import AddConstraint

from movierec.data import importer, pgload
from movierec.data.importer import ImportResult
from movierec.data.movielens import DataFormatError, RatingChunk, _parse_lines, _ratings_format
from movierec.db.engine import is_postgres
from movierec.db.ratings_reader import RatingColumns, _stream
from movierec.db.schema import Rating

CHUNK_ROWS = 200_000


def read_ratings(path: Path, default_time: int) -> Iterator[RatingChunk]:
    """The previous reader: text lines, parsed one by one."""
    sep, header = _ratings_format(path)
    with path.open("rb") as raw:
        fh = io.TextIOWrapper(raw, encoding="utf-8", errors="strict", newline="")
        line = 1 if header else 0
        if header:
            fh.readline()
        while lines := fh.readlines(CHUNK_ROWS * 24):
            chunk = _parse_lines(path, lines, line, sep, default_time)
            line += len(lines)
            if len(chunk):
                yield chunk


def import_movielens(engine: Engine, directory: Path) -> ImportResult:
    """The previous ``import movielens``: same transaction and rules, the old parsing and loading."""
    return importer.import_movielens(engine, directory, ratings_step=_store_ratings)


def _store_ratings(conn: Connection, path: Path, known: np.ndarray, result: ImportResult, _hook: object) -> None:
    chunks = _checked(path, read_ratings(path, int(time.time())), known)
    before = conn.execute(select(func.count()).select_from(Rating)).scalar_one()
    store = _copy_text if is_postgres(conn.engine) else _executemany
    result.ratings_read, touched = store(conn, chunks, before)
    result.ratings_inserted = conn.execute(select(func.count()).select_from(Rating)).scalar_one() - before
    result.ratings_updated = touched - result.ratings_inserted


def _checked(path: Path, chunks: Iterator[RatingChunk], known: np.ndarray) -> Iterator[RatingChunk]:
    for chunk in chunks:
        missing = ~np.isin(chunk.movie_id, known)
        if missing.any():
            raise DataFormatError(path, int(chunk.line[int(np.argmax(missing))]), "movie id not in the movies table")
        yield chunk


def _executemany(conn: Connection, chunks: Iterator[RatingChunk], _before: int) -> tuple[int, int]:
    from movierec.data.importer import _UPSERT_SQLITE

    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    read = touched = 0
    for chunk in chunks:
        cursor.executemany(_UPSERT_SQLITE, zip(chunk.user_id.tolist(), chunk.movie_id.tolist(), chunk.rating.tolist(),
                                               chunk.rated_at.tolist(), strict=True))
        touched += max(cursor.rowcount, 0)
        read += len(chunk)
    cursor.close()
    return read, touched


def _copy_text(conn: Connection, chunks: Iterator[RatingChunk], existing: int) -> tuple[int, int]:
    conn.execute(text("CREATE TEMPORARY TABLE import_ratings (user_id integer, movie_id integer, "
                      "rating double precision, rated_at bigint, line bigint) ON COMMIT DROP"))
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    read = 0
    with cursor.copy("COPY import_ratings (user_id, movie_id, rating, rated_at, line) FROM STDIN") as copy:
        for chunk in chunks:
            copy.write("".join(f"{u}\t{m}\t{r}\t{t}\t{n}\n" for u, m, r, t, n in zip(
                chunk.user_id.tolist(), chunk.movie_id.tolist(), chunk.rating.tolist(), chunk.rated_at.tolist(),
                chunk.line.tolist(), strict=True)))
            read += len(chunk)
    bulk = read >= pgload.BULK_ROWS and read >= existing
    if bulk:
        pgload._drop_secondary(conn)
    touched = conn.execute(text(
        "INSERT INTO ratings (user_id, movie_id, rating, rated_at) "
        "SELECT DISTINCT ON (user_id, movie_id) user_id, movie_id, rating, rated_at FROM import_ratings "
        "ORDER BY user_id, movie_id, rated_at DESC, line DESC "
        "ON CONFLICT (user_id, movie_id) DO UPDATE SET rating = excluded.rating, rated_at = excluded.rated_at "
        "WHERE excluded.rated_at >= ratings.rated_at "
        "AND (excluded.rating <> ratings.rating OR excluded.rated_at <> ratings.rated_at)"
    )).rowcount
    if bulk:  # as before: rebuilt with the server's default maintenance_work_mem
        indexes, foreign = pgload._secondary()
        for index in indexes:
            index.create(conn)
        for constraint in foreign:
            conn.execute(AddConstraint(constraint))
    return read, max(touched, 0)


def read_all(engine: Engine) -> RatingColumns:
    """The previous trainer reader: every row streamed through SQLAlchemy."""
    with engine.connect() as conn:
        return _stream(conn, 65_536)
