"""Ratings into PostgreSQL with binary COPY, inside the caller's transaction.

Two paths, both all-or-nothing (everything, DDL included, happens in the one transaction the
importer opened, so an error anywhere -- a bad row, a lost connection, a killed client -- rolls
all of it back):

* **Into an empty table** (the first import of a large data set): lock the table, ``TRUNCATE``
  it (it is empty; truncating in this transaction lets ``COPY ... FREEZE`` write the rows
  already frozen, sparing the first VACUUM a pass over every page), drop the primary key,
  secondary indexes and foreign key, ``COPY`` the presorted unique rows straight into
  ``ratings``, and build the constraints and indexes once at the end. Building an index from
  sorted rows costs a fraction of maintaining it row by row.
* **Merge** (the table holds ratings): ``COPY`` into a temporary table, then one
  ``INSERT ... SELECT ... ON CONFLICT DO UPDATE`` applying the importer's rule (a stored rating is
  replaced only by one at least as recent that differs). Large merges drop and rebuild the
  secondary indexes and foreign key as above; the primary key stays, as ``ON CONFLICT`` needs it.
"""

from __future__ import annotations

from sqlalchemy import Connection, text
from sqlalchemy.schema import AddConstraint, DropConstraint

from movierec.db.pgbinary import COLUMN_LIST, HEADER, TRAILER, encode
from movierec.db.schema import Rating

from .ratingset import RatingSet

#: From this many rows on, indexes and the foreign key are rebuilt rather than maintained row by
#: row (for a merge, only when the file is also at least as large as the table). The table is then
#: locked for the import, which is why small imports take the row-by-row path.
BULK_ROWS = 500_000
#: Rows encoded per COPY write (~42 MB of buffer).
COPY_ROWS = 1 << 20
#: Memory for each index build and the foreign-key check of a bulk load (the server default,
#: 64 MB, makes a 25M-row build spill to disk several times over).
BULK_MAINTENANCE_MEM = "512MB"

_MERGE = (
    f"INSERT INTO ratings ({COLUMN_LIST}) SELECT {COLUMN_LIST} FROM import_ratings "
    "ON CONFLICT (user_id, movie_id) DO UPDATE SET rating = excluded.rating, rated_at = excluded.rated_at "
    "WHERE excluded.rated_at >= ratings.rated_at "
    "AND (excluded.rating <> ratings.rating OR excluded.rated_at <> ratings.rated_at)"
)


def load(conn: Connection, ratings: RatingSet) -> tuple[int, int]:
    """Store ``ratings`` (unique, sorted); return (inserted, updated)."""
    if len(ratings) >= BULK_ROWS and _empty(conn):
        # Checked again under the lock: a rating written in between must not be truncated away.
        conn.execute(text("LOCK TABLE ratings IN ACCESS EXCLUSIVE MODE"))
        if _empty(conn):
            _load_empty(conn, ratings)
            return len(ratings), 0
    before = _count(conn)
    conn.execute(text(
        "CREATE TEMPORARY TABLE import_ratings (user_id integer, movie_id integer, rating double precision, "
        "rated_at bigint) ON COMMIT DROP"
    ))
    copy_into(conn, "import_ratings", ratings)
    bulk = len(ratings) >= BULK_ROWS and len(ratings) >= before
    if bulk:
        _drop_secondary(conn)
    touched = max(conn.execute(text(_MERGE)).rowcount, 0)
    if bulk:
        _restore_secondary(conn)
    inserted = _count(conn) - before
    return inserted, touched - inserted


def copy_into(conn: Connection, table: str, ratings: RatingSet, *, freeze: bool = False) -> None:
    """Binary ``COPY`` of ``ratings`` into ``table`` (written in slices, never one giant buffer)."""
    options = "FORMAT binary, FREEZE" if freeze else "FORMAT binary"
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        with cursor.copy(f"COPY {table} ({COLUMN_LIST}) FROM STDIN ({options})") as copy:
            copy.write(HEADER)
            for columns in ratings.slices(COPY_ROWS):
                copy.write(encode(*columns))
            copy.write(TRAILER)
    finally:
        cursor.close()


def _count(conn: Connection) -> int:
    return int(conn.execute(text("SELECT count(*) FROM ratings")).scalar_one())


def _empty(conn: Connection) -> bool:
    return bool(conn.execute(text("SELECT NOT EXISTS (SELECT 1 FROM ratings)")).scalar_one())


def _load_empty(conn: Connection, ratings: RatingSet) -> None:
    conn.execute(text("TRUNCATE ratings"))
    _drop_secondary(conn)
    primary = Rating.__table__.primary_key
    conn.execute(DropConstraint(primary))
    copy_into(conn, "ratings", ratings, freeze=True)
    conn.execute(text(f"SET LOCAL maintenance_work_mem = '{BULK_MAINTENANCE_MEM}'"))
    conn.execute(AddConstraint(primary))
    _restore_secondary(conn)


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
    conn.execute(text(f"SET LOCAL maintenance_work_mem = '{BULK_MAINTENANCE_MEM}'"))
    indexes, foreign = _secondary()
    for index in indexes:
        index.create(conn)
    for constraint in foreign:
        conn.execute(AddConstraint(constraint))
