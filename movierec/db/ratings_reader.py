"""Every rating of the database into numpy columns, fast: what the trainer reads before fitting.

PostgreSQL sends a result row (or a COPY row) as its own protocol message, and a client that
handles 25 million of them one by one spends most of its time there. So the server packs them:
each query covers a range of heap pages (a TID range scan, PostgreSQL 14+, reads just those
pages) and returns the rows of that range as one ``bytea`` of fixed 24-byte binary records
(``string_agg`` of ``int4send(user_id) || ...``), which numpy decodes in one call. Ranges are
read by ``workers`` connections at once, all in one exported REPEATABLE READ snapshot, so the
result is one consistent state of the table even while the API writes. Elsewhere (SQLite, older
PostgreSQL) rows stream through SQLAlchemy in chunks.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Connection, Engine, func, select, text

from .engine import DatabaseError, is_postgres
from .pgbinary import PACK_EXPRESSION, unpack
from .schema import Rating

#: Heap pages per range query: ~150 ratings a page, so ~2.4 million rows, ~60 MB of records.
RANGE_PAGES = 16_384
#: Rows per round trip on the streaming path.
STREAM_CHUNK = 65_536
#: PostgreSQL 14 added TID range scans; before, a ``ctid`` range would scan the whole table.
_TID_RANGE_VERSION = 140_000
_SNAPSHOT_ID = re.compile(r"[0-9A-F]+-[0-9A-F]+(-[0-9]+)?")


@dataclass
class RatingColumns:
    """All ratings as parallel arrays, in no particular order."""

    user_id: np.ndarray  # int64
    movie_id: np.ndarray  # int64
    rating: np.ndarray  # float32
    rated_at: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.user_id)


def read_all(engine: Engine, *, workers: int = 2, chunk: int = STREAM_CHUNK) -> RatingColumns:
    """Every row of ``ratings``: page ranges on PostgreSQL 14+, a stream of chunks elsewhere.

    Raises :class:`DatabaseError` for an error of the driver itself (SQLAlchemy's own errors pass
    through as they are).
    """
    if is_postgres(engine):
        import psycopg

        with engine.connect() as conn:
            version = conn.connection.driver_connection.info.server_version  # type: ignore[union-attr]
        if version >= _TID_RANGE_VERSION:
            try:
                return _read_ranges(engine, max(1, workers))
            except psycopg.Error as exc:
                raise DatabaseError(f"cannot read the ratings: {exc.__class__.__name__}: {exc}") from exc
    with engine.connect() as conn:
        return _stream(conn, chunk)


def _range_query(first: int, end: int | None) -> str:
    upper = f" AND ctid < '({end},0)'::tid" if end is not None else ""
    return (f"SELECT count(*), string_agg({PACK_EXPRESSION}, ''::bytea) FROM ratings "
            f"WHERE ctid >= '({first},0)'::tid{upper}")


@contextmanager
def _snapshot_connections(engine: Engine, n: int) -> Iterator[list[Connection]]:
    """``n`` connections in read-only REPEATABLE READ transactions sharing one snapshot."""
    with ExitStack() as stack:
        conns = [stack.enter_context(engine.connect().execution_options(isolation_level="REPEATABLE READ"))
                 for _ in range(n)]
        for conn in conns:
            stack.enter_context(conn.begin())
        snapshot = conns[0].execute(text("SELECT pg_export_snapshot()")).scalar_one()
        if not _SNAPSHOT_ID.fullmatch(snapshot):  # inlined below: SET takes no bound parameters
            raise ValueError(f"unexpected snapshot id {snapshot!r}")
        for conn in conns[1:]:
            # SET takes no server-side parameters: psycopg binds this one on the client, quoted.
            from psycopg import ClientCursor

            ClientCursor(conn.connection.driver_connection).execute("SET TRANSACTION SNAPSHOT %s", (snapshot,))
        for conn in conns:
            conn.execute(text("SET TRANSACTION READ ONLY"))
        yield conns


def _read_ranges(engine: Engine, workers: int) -> RatingColumns:
    with _snapshot_connections(engine, workers) as conns:
        pages = int(conns[0].execute(text(
            "SELECT pg_relation_size('ratings') / current_setting('block_size')::bigint")).scalar_one())
        starts = list(range(0, max(pages, 1), RANGE_PAGES))
        # The last range is open-ended: pages added since the size was read are read too.
        queries = [_range_query(s, s + RANGE_PAGES if i < len(starts) - 1 else None) for i, s in enumerate(starts)]

        def run(worker: int) -> list[dict[str, np.ndarray]]:
            cursor = conns[worker].connection.driver_connection.cursor()  # type: ignore[union-attr]
            parts = []
            for query in queries[worker::workers]:
                # binary=True: the bytea arrives as raw bytes, not hex text to decode.
                count, blob = cursor.execute(query, binary=True).fetchone()
                columns = unpack(blob or b"")
                if len(columns["user_id"]) != count:  # a NULL would drop a row from string_agg silently
                    raise ValueError(f"ratings pages from {query}: {count} rows but {len(columns['user_id'])} read")
                parts.append(columns)
            cursor.close()
            return parts

        with ThreadPoolExecutor(workers) as pool:
            parts = [part for done in pool.map(run, range(workers)) for part in done]
    def column(name: str, dtype: type) -> np.ndarray:
        return np.concatenate([p[name] for p in parts]).astype(dtype, copy=False) if parts else np.zeros(0, dtype)

    return RatingColumns(column("user_id", np.int64), column("movie_id", np.int64), column("rating", np.float32),
                         column("rated_at", np.int64))


def _stream(conn: Connection, chunk: int) -> RatingColumns:
    """Stream rows in chunks into arrays sized from ``COUNT(*)`` (grown if rows arrive meanwhile)."""
    cap = max(int(conn.execute(select(func.count()).select_from(Rating)).scalar_one()), 1)
    users, movies = np.empty(cap, np.int64), np.empty(cap, np.int64)
    values, times = np.empty(cap, np.float32), np.empty(cap, np.int64)
    filled = 0
    query = select(Rating.user_id, Rating.movie_id, Rating.rating, Rating.rated_at)
    result = conn.execution_options(stream_results=True, yield_per=chunk).execute(query)
    for rows in result.partitions(chunk):
        block = np.array(rows, dtype=np.float64)  # one C-level conversion per chunk
        k = block.shape[0]
        if filled + k > cap:  # rows inserted since COUNT(*): grow geometrically
            cap = max(2 * cap, filled + k)
            users, movies = np.resize(users, cap), np.resize(movies, cap)
            values, times = np.resize(values, cap), np.resize(times, cap)
        users[filled:filled + k] = block[:, 0]
        movies[filled:filled + k] = block[:, 1]
        values[filled:filled + k] = block[:, 2]
        times[filled:filled + k] = block[:, 3]  # float64 holds epoch seconds exactly (< 2**53)
        filled += k
    return RatingColumns(users[:filled], movies[:filled], values[:filled], times[:filled])
