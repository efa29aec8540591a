"""repository.write_transaction: all or nothing on both databases; on SQLite, one writer of the process at a time."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from app import repository
from movierec.db.engine import session_factory
from movierec.db.schema import Rating


def _count(engine: Engine) -> int:
    with session_factory(engine)() as session:
        return int(session.scalar(select(func.count()).select_from(Rating)))


def test_a_failed_write_leaves_nothing_and_frees_the_writer(seeded: Engine) -> None:
    before = _count(seeded)
    sessions = session_factory(seeded)
    with sessions() as session, pytest.raises(RuntimeError, match="halfway"):
        with repository.write_transaction(session):
            repository.upsert_ratings(session, [{"user_id": 900, "movie_id": 1, "rating": 4.0, "rated_at": 1}])
            raise RuntimeError("halfway")
    assert _count(seeded) == before
    with sessions() as session:  # the lock (SQLite) was released: the next writer gets in at once
        with repository.write_transaction(session):
            repository.upsert_ratings(session, [{"user_id": 900, "movie_id": 1, "rating": 4.0, "rated_at": 1}])
    assert _count(seeded) == before + 1


def test_sqlite_writers_of_one_process_take_turns(seeded: Engine) -> None:
    if seeded.dialect.name != "sqlite":
        pytest.skip("PostgreSQL writers run concurrently; only SQLite has a single writer")
    sessions = session_factory(seeded)
    first_inside, release, second_inside = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with sessions() as session, repository.write_transaction(session):
            repository.upsert_ratings(session, [{"user_id": 901, "movie_id": 2, "rating": 3.0, "rated_at": 1}])
            first_inside.set()
            release.wait(10)

    def second() -> None:
        with sessions() as session, repository.write_transaction(session):
            second_inside.set()
            repository.upsert_ratings(session, [{"user_id": 902, "movie_id": 2, "rating": 3.0, "rated_at": 1}])

    a = threading.Thread(target=first)
    a.start()
    assert first_inside.wait(10)
    b = threading.Thread(target=second)
    b.start()
    assert not second_inside.wait(0.3)  # queued behind the first writer, not inside with it
    release.set()
    a.join(10)
    b.join(10)
    assert second_inside.is_set()
    assert _count(seeded) >= 2
