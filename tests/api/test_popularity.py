"""The popularity table in flat arrays ranks and filters exactly as a plain list of movies would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import insert

from app.catalogue import split_genres, wanted_genres
from app.popularity import Popularity
from migrations import upgrade
from movierec.db.engine import make_engine, session_factory
from movierec.db.schema import Movie, Rating

GENRES = ["Action", "comedy", "Comedy", "Drama", "Film-Noir", "Sci-Fi", "Ünïcode"]


def _reference(movies: dict[int, tuple[str, int | None, str]], ratings: list[tuple[int, int, float]], prior: float,
               n: int, genre: str | None, min_year: int | None, exclude: set[int]) -> list[dict[str, Any]]:
    """The ranking computed the obvious way: every rated movie a dict, filtered one by one."""
    per: dict[int, list[float]] = {}
    for _, movie, rating in ratings:
        per.setdefault(movie, []).append(rating)
    counts = {m: len(r) for m, r in per.items()}
    total = sum(counts.values())
    global_mean = sum(sum(r) for r in per.values()) / total if total else 0.0
    score = {m: (counts[m] * (sum(r) / len(r)) + prior * global_mean) / (counts[m] + prior) for m, r in per.items()}
    wanted = wanted_genres(genre)
    out = []
    for m in sorted(per, key=lambda m: (-score[m], -counts[m], m)):
        title, year, genres = movies[m]
        names = split_genres(genres)
        if m in exclude or (wanted is not None and wanted.isdisjoint(g.lower() for g in names)):
            continue
        if min_year is not None and (year is None or year < min_year):
            continue
        out.append({"movie_id": m, "title": title, "year": year, "genres": names, "score": score[m],
                    "ratings_count": counts[m]})
    return out[:n]


@pytest.mark.parametrize("seed", range(6))
def test_top_and_counts_match_the_plain_computation(tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    url = f"sqlite:///{tmp_path / 'pop.db'}"
    upgrade(url)
    engine = make_engine(url)
    n_movies = int(rng.integers(1, 400))
    movies = {}
    for i in range(1, n_movies + 1):
        names = sorted(set(rng.choice(GENRES, size=int(rng.integers(0, 3)), replace=False).tolist()))
        year = None if rng.random() < 0.2 else int(rng.integers(1950, 2020))
        movies[i] = (f"Movie {i} ‘{rng.integers(100)}’", year, "|".join(names))
    pairs = {(int(u), int(m)) for u, m in zip(rng.integers(1, 60, 1500), rng.integers(1, n_movies + 1, 1500),
                                              strict=True)}
    ratings = [(u, m, float(rng.integers(1, 11)) / 2) for u, m in sorted(pairs)]
    with engine.begin() as conn:
        conn.execute(insert(Movie), [{"id": i, "title": t, "year": y, "genres": g} for i, (t, y, g) in movies.items()])
        conn.execute(insert(Rating), [{"user_id": u, "movie_id": m, "rating": r, "rated_at": 1} for u, m, r in ratings])
    popularity = Popularity(session_factory(engine))
    popularity.refresh()
    for _ in range(25):
        n = int(rng.integers(1, 120))
        genre = rng.choice([None, "comedy", "COMEDY|drama", "sci-fi", "ünïcode", "Western", "|"])
        min_year = None if rng.random() < 0.5 else int(rng.integers(1950, 2025))
        exclude = set(rng.integers(1, n_movies + 1, int(rng.integers(0, 50))).tolist())
        got = popularity.top(n, genre=genre, min_year=min_year, exclude=exclude)
        want = _reference(movies, ratings, popularity.prior, n, genre, min_year, exclude)
        assert [g["movie_id"] for g in got] == [w["movie_id"] for w in want]
        for g, w in zip(got, want, strict=True):
            assert g == {**w, "score": pytest.approx(w["score"], rel=1e-12)}
    asked = rng.integers(0, n_movies + 5, 40).tolist()
    count_of = {m: sum(1 for _, mm, _ in ratings if mm == m) for m in asked}
    assert popularity.counts(asked) == [count_of[m] for m in asked]


def test_the_periodic_refresh_rebuilds_only_when_the_data_moved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    url = f"sqlite:///{tmp_path / 'pop.db'}"
    upgrade(url)
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(insert(Movie), [{"id": i, "title": f"M{i}", "year": 2000, "genres": "Drama"} for i in (1, 2, 3)])
        conn.execute(insert(Rating), [{"user_id": 1, "movie_id": 1, "rating": 4.0, "rated_at": 5},
                                      {"user_id": 1, "movie_id": 2, "rating": 3.0, "rated_at": 6}])
    popularity = Popularity(session_factory(engine))
    first = popularity.refresh()
    assert popularity.refresh_if_changed() is first  # nothing moved: the same table, not rebuilt
    changes = [
        "INSERT INTO ratings VALUES (2, 3, 2.5, 1)",  # a rating, older than the newest
        "UPDATE ratings SET rating = 3.0 WHERE movie_id = 1",  # swapped values, same count, sum, newest
        "UPDATE ratings SET rating = 4.0 WHERE movie_id = 2",
        "DELETE FROM ratings WHERE movie_id = 3",
        "INSERT INTO movies (id, title, year, genres) VALUES (4, 'M4', 1999, '')",
    ]
    from sqlalchemy import text

    snap = first
    for sql in changes:
        with engine.begin() as conn:
            conn.execute(text(sql))
        rebuilt = popularity.refresh_if_changed()
        assert rebuilt is not snap, sql
        snap = rebuilt
        assert popularity.refresh_if_changed() is snap
    monkeypatch.setattr("app.popularity.MAX_AGE_S", 0.0)  # old enough: rebuilt whatever the fingerprint
    assert popularity.refresh_if_changed() is not snap
