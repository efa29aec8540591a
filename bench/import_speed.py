"""Import speed: synthetic MovieLens-CSV sets imported into SQLite and PostgreSQL, ratings/second.

    python bench/import_speed.py --ratings 1000000 25000000 [--backends sqlite postgresql]

Writes a ``movies.csv`` + ``ratings.csv`` directory per size (ml-25m's layout), runs
``import movielens`` into a fresh database per backend (a new SQLite file; a throwaway PostgreSQL
database, dropped afterwards), then imports the same directory again to time the idempotent
no-change path. Prints one table.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from sqlalchemy import text
from sqlalchemy.engine import make_url

from migrations import upgrade
from movierec.data.importer import import_movielens
from movierec.db.engine import make_engine


def write_set(directory: Path, n_ratings: int, n_movies: int, seed: int = 0) -> None:
    """A ml-25m-shaped CSV set: power-law movie popularity, half-star ratings, unique (user, movie)."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "movies.csv").open("w") as fh:
        fh.write("movieId,title,genres\n")
        fh.writelines(f"{m},Movie {m} ({1950 + m % 70}),Drama|Comedy\n" for m in range(1, n_movies + 1))
    n_users = max(1, n_ratings // 150)
    popularity = 1.0 / np.arange(1, n_movies + 1) ** 0.8
    popularity /= popularity.sum()
    with (directory / "ratings.csv").open("w") as fh:
        fh.write("userId,movieId,rating,timestamp\n")
        done, block = 0, 2_000_000
        while done < n_ratings:
            size = min(block, n_ratings - done)
            users = rng.integers(1, n_users + 1, size)
            movies = rng.choice(n_movies, size, p=popularity) + 1
            # Unique (user, movie) pairs, as in MovieLens: drop repeats within the block.
            key = np.unique(users.astype(np.int64) * (n_movies + 1) + movies)
            users, movies = key // (n_movies + 1), key % (n_movies + 1)
            stars = rng.integers(1, 11, len(key)) / 2
            stamps = rng.integers(789_652_009, 1_574_327_703, len(key))
            fh.writelines(f"{u},{m},{r},{t}\n" for u, m, r, t in zip(users.tolist(), movies.tolist(),
                                                                     stars.tolist(), stamps.tolist()))
            done += size


def fresh_database(backend: str, workdir: Path, admin_url: str) -> tuple[str, callable]:
    if backend == "sqlite":
        return f"sqlite:///{workdir / f'{uuid.uuid4().hex}.db'}", lambda: None
    name = f"movierec_bench_{uuid.uuid4().hex[:10]}"
    admin = make_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return make_url(admin_url).set(database=name).render_as_string(hide_password=False), drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ratings", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--movies", type=int, default=60_000)
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument("--postgres-url", default=os.environ.get(
        "MOVIEREC_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="movierec-import-") as tmp:
        workdir = Path(tmp)
        for n in args.ratings:
            data = workdir / f"set-{n}"
            write_set(data, n, args.movies)
            for backend in args.backends:
                url, drop = fresh_database(backend, workdir, args.postgres_url)
                try:
                    upgrade(url)
                    engine = make_engine(url)
                    first = import_movielens(engine, data)
                    started = time.perf_counter()
                    again = import_movielens(engine, data)
                    repeat_s = time.perf_counter() - started
                    engine.dispose()
                finally:
                    drop()
                rows.append((backend, first.ratings_read, first.seconds, repeat_s, again.ratings_inserted
                             + again.ratings_updated))
                print(f"{backend:10} {first.ratings_read:>11,} ratings  first import {first.seconds:7.1f} s "
                      f"({first.ratings_read / first.seconds:>10,.0f}/s)  second {repeat_s:7.1f} s, "
                      f"{rows[-1][4]} changed", flush=True)
    print("\n| backend | ratings | first import | ratings/s | second import (no change) |")
    print("|---|---:|---:|---:|---:|")
    for backend, n, first_s, repeat_s, _ in rows:
        print(f"| {backend} | {n:,} | {first_s:.1f} s | {n / first_s:,.0f} | {repeat_s:.1f} s |")


if __name__ == "__main__":
    main()
