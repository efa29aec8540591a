"""The migrations build the schema the ORM describes, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import IntegrityError

from migrations import downgrade, head_revision, upgrade
from movierec.db.migrate import current_revision
from movierec.db.schema import Base


def test_upgrade_reaches_head_and_matches_the_orm(engine: Engine) -> None:
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diffs == []


def test_indexes_for_recommend_and_trainer_exist(engine: Engine) -> None:
    names = {ix["name"] for ix in inspect(engine).get_indexes("ratings")}
    assert {"ix_ratings_movie_id", "ix_ratings_rated_at"} <= names
    assert inspect(engine).get_pk_constraint("ratings")["constrained_columns"] == ["user_id", "movie_id"]


@pytest.mark.parametrize("rating", [0.0, 0.4, 5.5, 3.3, -1.0])
def test_database_rejects_ratings_off_the_half_star_scale(engine: Engine, rating: float) -> None:
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO movies (id, title, genres) VALUES (1, 'A', '')"))
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(text("INSERT INTO ratings VALUES (1, 1, :r, 0)"), {"r": rating})


def test_database_accepts_every_half_star(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO movies (id, title, genres) VALUES (1, 'A', '')"))
        for user, stars in enumerate(range(1, 11), start=1):
            conn.execute(text("INSERT INTO ratings VALUES (:u, 1, :r, 0)"), {"u": user, "r": stars / 2})
        assert conn.execute(text("SELECT count(*) FROM ratings")).scalar_one() == 10


def test_rating_needs_an_existing_movie(engine: Engine) -> None:
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(text("INSERT INTO ratings VALUES (1, 999, 4.0, 0)"))


def test_downgrade_to_base_and_back(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url)
    downgrade(url, "base")
    from movierec.db.engine import make_engine

    engine = make_engine(url)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    upgrade(url)
    assert {"movies", "ratings"} <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_0004_packs_the_recorded_items_into_their_impressions_and_back(db_url: str) -> None:
    """Impressions recorded before 0004 keep their movies, in position order, through the upgrade
    (and the downgrade gives the items back): on SQLite and PostgreSQL."""
    from movierec.db.engine import make_engine
    from movierec.db.schema import unpack_movies

    shown = {"a": [50, 7, 2**31 - 1, 1], "b": list(range(1000, 1100)), "c": []}
    downgrade(db_url, "0003")
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            for request_id in shown:
                conn.execute(text("INSERT INTO impressions (request_id, user_id, model_version, source, endpoint, "
                                  "created_at) VALUES (:r, 1, 1, 'model', 'recommend', 100)"), {"r": request_id})
            # Inserted out of position order: the packing must follow the positions, not the rows.
            conn.execute(text("INSERT INTO impression_items (request_id, position, movie_id) VALUES (:r, :p, :m)"),
                         [{"r": r, "p": p, "m": m} for r, movies in shown.items()
                          for p, m in reversed(list(enumerate(movies)))])
            conn.execute(text("INSERT INTO events (request_id, movie_id, kind, occurred_at) "
                              "VALUES ('a', 7, 'click', 101)"))
        engine.dispose()
        upgrade(db_url)
        with engine.connect() as conn:
            packed = dict(conn.execute(text("SELECT request_id, movies FROM impressions")).all())
            assert conn.execute(text("SELECT COUNT(*) FROM events")).scalar_one() == 1
        assert {r: unpack_movies(m) for r, m in packed.items()} == shown
        assert "impression_items" not in inspect(engine).get_table_names()
        engine.dispose()
        downgrade(db_url, "0003")
        with engine.connect() as conn:
            items = conn.execute(text("SELECT request_id, position, movie_id FROM impression_items")).all()
            assert conn.execute(text("SELECT COUNT(*) FROM events")).scalar_one() == 1
        assert sorted(items) == sorted((r, p, m) for r, movies in shown.items() for p, m in enumerate(movies))
        assert "movies" not in {c["name"] for c in inspect(engine).get_columns("impressions")}
    finally:
        engine.dispose()
        upgrade(db_url)
        with make_engine(db_url).begin() as conn:
            conn.execute(text("DELETE FROM events"))
            conn.execute(text("DELETE FROM impressions"))
