"""Ratings into PostgreSQL with binary COPY, inside the caller's transaction.

Two paths, both all-or-nothing (everything, DDL included, happens in the one transaction the
importer opened, so an error anywhere -- a bad row, a lost connection, a killed client -- rolls
all of it back):

* **Into an empty table** (the first import of a large data set): lock the table, drop the
  primary key, secondary indexes and foreign key, ``TRUNCATE`` it (it is empty; truncating in
  this transaction lets ``COPY ... FREEZE`` write the rows already frozen, sparing the first
  VACUUM a pass over every page) and ``COPY`` each block straight into ``ratings`` as soon as
  it is parsed, so the server loads while Python parses. The constraints and indexes are built
  once at the end: a fraction of the cost of maintaining them row by row.
* **Merge** (the table holds ratings): ``COPY`` into a temporary table, then one
  ``INSERT ... SELECT ... ON CONFLICT DO UPDATE`` applying the importer's rule (a stored rating is
  replaced only by one at least as recent that differs). Large merges drop and rebuild the
  secondary indexes and foreign key as above; the primary key stays, as ``ON CONFLICT`` needs it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import numpy as np
from sqlalchemy import Connection, text
from sqlalchemy.schema import AddConstraint, DropConstraint

from movierec.db.engine import DatabaseError
from movierec.db.pgbinary import COLUMN_LIST, HEADER, TRAILER, encode
from movierec.db.schema import Rating

from .movielens import RatingChunk
from .ratingset import RatingSet, collect, compact

Columns = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]

#: From this many rows on, indexes and the foreign key are rebuilt rather than maintained row by
#: row: into an empty table, or in a merge whose file holds at least twice the rows stored. The
#: table is then locked for the import, which is why smaller imports maintain them.
BULK_ROWS = 500_000
#: Rows encoded per COPY write (~42 MB of buffer).
COPY_ROWS = 1 << 20
#: Memory for each index build and the foreign-key check of a bulk load (the server default,
#: 64 MB, makes a 25M-row build spill to disk several times over).
BULK_MAINTENANCE_MEM = "512MB"

# The join leaves out rows that would change nothing before ON CONFLICT sees them: ON CONFLICT DO
# UPDATE locks every conflicting row, even one its WHERE then leaves alone, so without it a
# re-import would write a lock into every stored row (1.5-1.7x slower for 510k ratings). The
# ON CONFLICT rule still decides, for rows written meanwhile.
_MERGE = (
    "INSERT INTO ratings (user_id, movie_id, rating, rated_at) SELECT s.user_id, s.movie_id, s.rating, s.rated_at FROM import_ratings s "
    "LEFT JOIN ratings r ON r.user_id = s.user_id AND r.movie_id = s.movie_id "
    "WHERE r.user_id IS NULL OR (s.rated_at >= r.rated_at AND (s.rating <> r.rating OR s.rated_at <> r.rated_at)) "
    "ON CONFLICT (user_id, movie_id) DO UPDATE SET rating = excluded.rating, rated_at = excluded.rated_at "
    "WHERE excluded.rated_at >= ratings.rated_at "
    "AND (excluded.rating <> ratings.rating OR excluded.rated_at <> ratings.rated_at)"
)

#: Every COPY the importer runs, written out (no SQL is assembled at run time); the columns are
#: pgbinary's record layout, COLUMN_LIST.
_COPY = {
    ("ratings", True): "COPY ratings (user_id, movie_id, rating, rated_at) FROM STDIN (FORMAT binary, FREEZE)",
    ("ratings", False): "COPY ratings (user_id, movie_id, rating, rated_at) FROM STDIN (FORMAT binary)",
    ("import_ratings", False): "COPY import_ratings (user_id, movie_id, rating, rated_at) FROM STDIN (FORMAT binary)",
}
assert all(f"({COLUMN_LIST})" in statement for statement in (_MERGE, *_COPY.values()))


def load(conn: Connection, chunks: Iterable[RatingChunk], rows_hint: int) -> tuple[int, int, int]:
    """Store validated ``chunks`` (``rows_hint``: about how many); return (read, inserted, updated)."""
    if rows_hint >= BULK_ROWS and _empty(conn):
        # Checked again under the lock: a rating written in between must not be truncated away.
        conn.execute(text("LOCK TABLE ratings IN ACCESS EXCLUSIVE MODE"))
        if _empty(conn):
            return _load_empty(conn, chunks)
    ratings = collect(chunks)
    inserted, updated = _merge(conn, ratings)
    return ratings.read, inserted, updated


def _merge(conn: Connection, ratings: RatingSet) -> tuple[int, int]:
    before = _count(conn)
    conn.execute(text(
        "CREATE TEMPORARY TABLE import_ratings (user_id integer, movie_id integer, rating double precision, "
        "rated_at bigint) ON COMMIT DROP"
    ))
    copy_into(conn, "import_ratings", ratings.slices(COPY_ROWS))
    # Rebuilding pays when the rows may well double the table; a re-import of the same file
    # (nothing written) or a top-up keeps its indexes.
    bulk = len(ratings) >= BULK_ROWS and len(ratings) >= 2 * before
    if bulk:
        _drop_secondary(conn)
    touched = max(conn.execute(text(_MERGE)).rowcount, 0)
    if bulk:
        _restore_secondary(conn)
    inserted = _count(conn) - before
    return inserted, touched - inserted


def copy_into(conn: Connection, table: str, slices: Iterable[Columns], *, freeze: bool = False) -> None:
    """Binary ``COPY`` into ``table`` of column slices (user, movie, rating, rated_at), one write each.

    The server parses each slice while the caller produces the next: parsing the file and
    loading it overlap on two cores.
    """
    import psycopg

    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        with _driver_quiet(), cursor.copy(_COPY[table, freeze]) as copy:
            copy.write(HEADER)
            for columns in slices:
                copy.write(encode(*columns))
            copy.write(TRAILER)
    except psycopg.Error as exc:  # the raw cursor's errors, as SQLAlchemy would have wrapped them
        raise DatabaseError(f"COPY into {table} failed: {str(exc).strip().splitlines()[0]}") from exc
    finally:
        cursor.close()


@contextmanager
def _driver_quiet() -> Iterator[None]:
    """psycopg also logs a warning when a COPY cannot be ended on a lost connection: the error
    raised says it already, once (the CLI prints exactly one line)."""
    logger = logging.getLogger("psycopg")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _count(conn: Connection) -> int:
    return int(conn.execute(text("SELECT count(*) FROM ratings")).scalar_one())


def _empty(conn: Connection) -> bool:
    return bool(conn.execute(text("SELECT NOT EXISTS (SELECT 1 FROM ratings)")).scalar_one())


def _load_empty(conn: Connection, chunks: Iterable[RatingChunk]) -> tuple[int, int, int]:
    """COPY the chunks straight into the (locked, empty) table as they are parsed, then build the keys.

    Rows go in file order; a file that rates a pair twice is found afterwards (the primary key
    could not be built) and loaded again from its resolved, sorted rows instead.
    """
    _drop_secondary(conn)
    primary = Rating.__table__.primary_key
    conn.execute(DropConstraint(primary))
    kept: list[RatingChunk] = []
    attempt = conn.begin_nested()
    # FREEZE needs the table truncated in the current subtransaction (it is empty: nothing is lost).
    conn.execute(text("TRUNCATE ratings"))
    copy_into(conn, "ratings", _keep(chunks, kept), freeze=True)
    ratings = collect(kept)
    del kept
    if len(ratings) < ratings.read:
        attempt.rollback()
        attempt = conn.begin_nested()
        conn.execute(text("TRUNCATE ratings"))
        copy_into(conn, "ratings", ratings.slices(COPY_ROWS), freeze=True)
    attempt.commit()
    conn.execute(text("SELECT set_config('maintenance_work_mem', :mem, true)"), {"mem": BULK_MAINTENANCE_MEM})
    conn.execute(AddConstraint(primary))
    _restore_secondary(conn)
    return ratings.read, len(ratings), 0


def _keep(chunks: Iterable[RatingChunk], kept: list[RatingChunk]) -> Iterator[Columns]:
    """The columns of each chunk, keeping a compact copy of it (for the duplicate check)."""
    for chunk in chunks:
        kept.append(compact(chunk))
        yield chunk.user_id, chunk.movie_id, chunk.rating, chunk.rated_at


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
    conn.execute(text("SELECT set_config('maintenance_work_mem', :mem, true)"), {"mem": BULK_MAINTENANCE_MEM})
    indexes, foreign = _secondary()
    for index in indexes:
        index.create(conn)
    for constraint in foreign:
        conn.execute(AddConstraint(constraint))
