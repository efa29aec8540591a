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
