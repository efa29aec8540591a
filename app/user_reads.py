"""One user's ratings for GET /recommend: read fresh on every request, at the least cost.

A recommendation must never show a movie the user rated a moment ago, through whichever worker
or process the rating was stored (an API worker, an import, a SQL console). The database is the
only thing all of them share, so the ratings are read from it on every request; what is saved
is everything around the read (profiled in docs/benchmarks.md, "Where GET /recommend's time
goes"): no ORM session or statement compilation (:func:`app.repository.user_ratings_raw` runs one
prepared query on the driver connection), and on SQLite no thread-pool hop either.

* SQLite: the read takes tens of microseconds in-process and a reader never waits for a writer
  (WAL), so it runs on the event loop, on a connection of its own that only the loop's thread
  uses: it never waits for the pool, which request threads may hold while they queue on the
  write lock. Outside a transaction every read sees the latest commit.
* Other databases (PostgreSQL): a network round trip, made from the thread pool on a pooled
  connection.

Driver errors come out as SQLAlchemy's ``DBAPIError`` subclasses, like any other query's, so
the app's handlers answer 503 for a database that is down; a connection that failed is dropped.
"""

from __future__ import annotations

import threading

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine
from sqlalchemy.engine.interfaces import DBAPIConnection

from . import repository
from .repository import UserRatings


class UserRatingsReader:
    """Reads one user's ratings: :meth:`read` from any thread, :meth:`read_here` on the event loop."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        dialect = engine.dialect
        self._paramstyle = dialect.paramstyle
        self._dbapi_error = dialect.loaded_dbapi.Error
        database = engine.url.database
        #: Whether reads may run on the event loop (a SQLite file: in-process, never blocked by writers).
        self.inline = dialect.name == "sqlite" and bool(database) and database != ":memory:"
        self._own: DBAPIConnection | None = None  # the event loop's connection (SQLite)
        self._own_lock = threading.Lock()  # only one thread uses it; the lock makes misuse safe, not slow

    def read(self, user_id: int) -> UserRatings:
        """The user's ratings, on a connection from the pool (any thread)."""
        try:
            connection = self.engine.raw_connection()  # a refused connection raises the driver's error
        except self._dbapi_error as exc:
            raise self._wrap(exc, user_id) from exc
        try:
            return repository.user_ratings_raw(connection, self._paramstyle, user_id)
        except self._dbapi_error as exc:
            if self.engine.dialect.is_disconnect(exc, connection.dbapi_connection, None):
                connection.invalidate(exc)
            raise self._wrap(exc, user_id) from exc
        finally:
            connection.close()

    def read_here(self, user_id: int) -> UserRatings:
        """The user's ratings on this reader's own connection (SQLite, called on the event loop)."""
        if not self.inline:
            return self.read(user_id)
        with self._own_lock:
            try:
                if self._own is None:
                    # Made by the pool (its connect hooks: WAL, foreign keys, lower()), then detached from it.
                    pooled = self.engine.raw_connection()
                    pooled.detach()
                    self._own = pooled
                return repository.user_ratings_raw(self._own, self._paramstyle, user_id)
            except self._dbapi_error as exc:
                self._drop_own()
                raise self._wrap(exc, user_id) from exc

    def close(self) -> None:
        """Close the reader's own connection (at shut-down)."""
        with self._own_lock:
            self._drop_own()

    def _drop_own(self) -> None:
        own, self._own = self._own, None
        if own is not None:
            try:
                own.close()
            except self._dbapi_error:  # already broken: nothing to hand back
                pass

    def _wrap(self, exc: Exception, user_id: int) -> sa_exc.DBAPIError:
        return sa_exc.DBAPIError.instance("SELECT ... FROM ratings WHERE user_id = ?", (user_id,), exc,
                                          self._dbapi_error, dialect=self.engine.dialect)  # type: ignore[return-value]


__all__ = ["UserRatings", "UserRatingsReader"]
