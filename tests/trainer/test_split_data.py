"""Splits and data loading (files, SQLite database), including empty and odd data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import insert

from movierec.db.engine import make_engine
from movierec.db.schema import Base, Movie, Rating
from trainer import NoDataError
from trainer.data import from_raw, load_db, load_files
from trainer.split import latest_split, random_split
from tests.trainer.conftest import write_udata


def test_random_split_fraction_and_determinism(synth) -> None:
    a, b = random_split(synth), random_split(synth)
    assert np.array_equal(a, b)
    assert a.sum() == round(0.1 * len(synth))


def test_latest_split_holds_out_each_users_latest(synth) -> None:
    mask = latest_split(synth)
    for user in range(synth.n_users):
        rows = synth.user == user
        times, held = synth.rated_at[rows], mask[rows]
        assert held.sum() == int(rows.sum() * 0.2)
        if held.any() and (~held).any():
            assert times[held].min() >= times[~held].max()


def test_from_raw_is_canonical_whatever_the_row_order(synth) -> None:
    perm = np.random.default_rng(3).permutation(len(synth))
    ext_u, ext_m = synth.user_ids[synth.user][perm], synth.movie_ids[synth.movie][perm]
    again = from_raw(ext_u, ext_m, synth.rating[perm], synth.rated_at[perm])
    for name in ("user", "movie", "rating", "rated_at", "user_ids", "movie_ids"):
        assert np.array_equal(getattr(again, name), getattr(synth, name)), name


def test_from_raw_empty_is_no_data() -> None:
    with pytest.raises(NoDataError):
        from_raw(np.array([]), np.array([]), np.array([]), np.array([]))


def test_load_files(tmp_path: Path, synth) -> None:
    folder = write_udata(tmp_path / "ml", synth)
    (folder / "movies.tsv").write_text("movie_id\ttitle\tyear\tgenres\n11\tToy Story\t1995\tAnimation\n")
    data = load_files(folder)
    assert len(data) == len(synth)
    assert data.titles == {11: "Toy Story"}
    assert np.array_equal(data.movie_ids, synth.movie_ids)


def _sqlite(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'ratings.db'}"
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    engine.dispose()
    return url


def test_load_db_streams_all_rows_and_skips_unrated_movies(tmp_path: Path, synth) -> None:
    url = _sqlite(tmp_path)
    engine = make_engine(url)
    movie_rows = [{"id": int(m), "title": f"T{m}", "year": 2000, "genres": "Drama"} for m in synth.movie_ids]
    movie_rows.append({"id": 999_999, "title": "Nobody rated me", "year": 2001, "genres": ""})
    rating_rows = [
        {"user_id": int(synth.user_ids[u]), "movie_id": int(synth.movie_ids[m]), "rating": float(r), "rated_at": int(t)}
        for u, m, r, t in zip(synth.user, synth.movie, synth.rating, synth.rated_at, strict=True)
    ]
    with engine.begin() as conn:
        conn.execute(insert(Movie), movie_rows)
        conn.execute(insert(Rating), rating_rows)
    engine.dispose()
    data = load_db(url, chunk=97)  # a chunk size that does not divide the row count
    assert len(data) == len(synth)
    assert 999_999 not in data.movie_ids
    assert data.titles[999_999] == "Nobody rated me"
    for name in ("user", "movie", "rating", "rated_at", "user_ids", "movie_ids"):
        assert np.array_equal(getattr(data, name), getattr(synth, name)), name
    assert data.snapshot() == {"ratings": len(synth), "max_rated_at": int(synth.rated_at.max())}


def test_load_db_empty_database(tmp_path: Path) -> None:
    with pytest.raises(NoDataError, match="empty"):
        load_db(_sqlite(tmp_path))
