"""Engines and sessions for the ratings database, tuned per backend."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker


class DatabaseError(RuntimeError):
    """The database could not be reached or used; the message says which and why."""


def make_engine(url: str, **kwargs: object) -> Engine:
    """Create an engine for ``url``.

    SQLite files get their parent directory created, WAL journalling (readers never block the
    writer) and foreign keys switched on, which SQLite leaves off by default.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        connect_args = dict(kwargs.pop("connect_args", {}) or {})  # type: ignore[call-overload]
        connect_args.setdefault("timeout", 30)
        connect_args.setdefault("check_same_thread", False)
        engine = create_engine(url, connect_args=connect_args, **kwargs)  # type: ignore[arg-type]

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            # SQLite's lower() folds ASCII only ('Á' stays 'Á'); Python's str.lower folds every
            # script, as PostgreSQL's lower() does in a UTF-8 database, so lower() means the same
            # on both backends (case-insensitive title search).
            dbapi_conn.create_function("lower", 1, _lower, deterministic=True)
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    if parsed.get_backend_name() == "postgresql":
        connect_args = dict(kwargs.pop("connect_args", {}) or {})  # type: ignore[call-overload]
        connect_args.setdefault("connect_timeout", 5)
        kwargs["connect_args"] = connect_args
    return create_engine(url, **kwargs)  # type: ignore[arg-type]


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def is_postgres(engine: Engine) -> bool:
    """True when ``engine`` talks to PostgreSQL (COPY and ON CONFLICT paths)."""
    return engine.dialect.name == "postgresql"


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """A session factory bound to ``engine`` that keeps objects usable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """A session in one transaction: committed on success, rolled back on any error."""
    with session_factory(engine)() as session, session.begin():
        yield session
