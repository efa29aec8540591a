"""Reading every rating into numpy: the same rows on SQLite and PostgreSQL, one snapshot, page ranges."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from sqlalchemy import Engine, insert, text

from movierec.db import ratings_reader
from movierec.db.ratings_reader import read_all
from movierec.db.schema import Movie, Rating


def fill(engine: Engine, n_users: int = 300, n_movies: int = 40, seed: int = 1) -> np.ndarray:
    """Ratings with ids, stars and timestamps across their whole ranges; returns them sorted."""
    rng = np.random.default_rng(seed)
    users = np.unique(np.append(rng.integers(1, 2**31 - 1, n_users), 2**31 - 1))
    rows = {(int(u), int(m)) for u in users for m in rng.choice(n_movies, 12, replace=False) + 1}
    table = np.array(sorted(rows), dtype=np.int64)
    stars = rng.integers(1, 11, len(table)) / 2
    stamps = rng.integers(0, 2**40, len(table))
    with engine.begin() as conn:
        conn.execute(insert(Movie), [{"id": m, "title": f"M{m}", "year": None, "genres": ""} for m in range(1, n_movies + 1)])
        conn.execute(insert(Rating), [{"user_id": int(u), "movie_id": int(m), "rating": float(r), "rated_at": int(t)}
                                      for (u, m), r, t in zip(table.tolist(), stars, stamps.tolist(), strict=True)])
    return np.column_stack([table, stars, stamps]).astype(object)


def as_sorted(columns: ratings_reader.RatingColumns) -> np.ndarray:
    got = np.column_stack([columns.user_id, columns.movie_id, columns.rating.astype(np.float64), columns.rated_at])
    order = np.lexsort((columns.movie_id, columns.user_id))
    return got[order].astype(object)


@pytest.mark.parametrize("workers", [1, 3])
def test_every_row_exactly_once(engine: Engine, monkeypatch: pytest.MonkeyPatch, workers: int) -> None:
    expected = fill(engine)
    # Tiny ranges: many range queries, an uneven split among the workers, the open-ended last one.
    monkeypatch.setattr(ratings_reader, "RANGE_PAGES", 3)
    got = read_all(engine, workers=workers, chunk=97)
    assert got.user_id.dtype == np.int64 and got.rating.dtype == np.float32 and got.rated_at.dtype == np.int64
    assert len(got) == len(expected)
    assert (as_sorted(got) == expected).all()


def test_empty_table(engine: Engine) -> None:
    got = read_all(engine)
    assert len(got) == 0 and got.rating.dtype == np.float32


@pytest.mark.postgres
def test_postgres_read_is_one_snapshot_while_the_api_writes(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows written (and deleted) while the ranges are read never show up half: one consistent state."""
    from movierec.db.engine import make_engine

    engine = make_engine(postgres_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM ratings"))
            conn.execute(text("DELETE FROM movies"))
        expected = fill(engine)
        monkeypatch.setattr(ratings_reader, "RANGE_PAGES", 1)
        real = ratings_reader.unpack
        wrote = threading.Event()

        def unpack_then_write(blob: bytes) -> dict[str, np.ndarray]:
            if not wrote.is_set():  # after the first range: new rows at the end, old rows gone
                wrote.set()
                with engine.begin() as conn:
                    conn.execute(text("INSERT INTO ratings SELECT user_id + 1, movie_id, rating, rated_at FROM ratings "
                                      "WHERE user_id < 2147483000 ON CONFLICT DO NOTHING"))
                    conn.execute(text("DELETE FROM ratings WHERE movie_id = 1"))
            return real(blob)

        monkeypatch.setattr(ratings_reader, "unpack", unpack_then_write)
        got = read_all(engine, workers=2)
        assert wrote.is_set()
        assert (as_sorted(got) == expected).all()
    finally:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM ratings"))
            conn.execute(text("DELETE FROM movies"))
        engine.dispose()
