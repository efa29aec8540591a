"""Synthetic MovieLens-shaped ratings for the speed and serving benchmarks.

Shape: ~154 ratings per user (MovieLens 25M: 25.0M ratings / 162K users) and a catalogue growing
with the square root of the data up to 60,000 movies at 25M ratings (MovieLens 25M: 59K movies).
Users' activity is log-normal, movies' popularity a power law (weight ``(rank + 10)^-1.1``, ids
shuffled), pairs are distinct. Ratings are a low-rank truth plus noise:
``3.5 + b_u + b_m + u·m + N(0, 0.8)`` (rank 8), rounded to half stars in 0.5..5.

usage: python -m bench.synthetic N [N ...]   (writes bench/results/raw/synth-N.npz, prints the shape)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from bench.common import RAW

SEED = 20240531


def shape_for(n_ratings: int) -> tuple[int, int]:
    """(users, movies) for ``n_ratings`` ratings."""
    users = max(500, int(round(n_ratings / 154)))
    movies = int(np.clip(round(60_000 * (n_ratings / 25e6) ** 0.5), 1_000, 60_000))
    return users, movies


def generate(n: int, seed: int = SEED, rank: int = 8, shape: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
    """``{"user": int32, "movie": int32, "rating": float32}`` with ``n`` distinct (user, movie) pairs.

    ``shape`` = (users, movies) overrides :func:`shape_for`.
    """
    n_users, n_movies = shape or shape_for(n)
    rng = np.random.default_rng(seed)
    pu = rng.lognormal(0.0, 1.0, n_users)
    pu /= pu.sum()
    pm = (np.arange(n_movies) + 10.0) ** -1.1
    pm = pm[rng.permutation(n_movies)]
    pm /= pm.sum()
    cu, cm = np.cumsum(pu), np.cumsum(pm)
    keys = np.zeros(0, np.int64)
    while len(keys) < n:
        want = int((n - len(keys)) * 1.2) + 1000
        u = np.minimum(np.searchsorted(cu, rng.random(want)), n_users - 1)
        m = np.minimum(np.searchsorted(cm, rng.random(want)), n_movies - 1)
        keys = _unique(np.concatenate([keys, u.astype(np.int64) * n_movies + m]))
    keys = keys[rng.permutation(len(keys))[:n]]
    keys.sort()  # canonical order: by user, then movie
    user = (keys // n_movies).astype(np.int32)
    movie = (keys % n_movies).astype(np.int32)
    del keys
    uf = rng.normal(0, 0.35, (n_users, rank)).astype(np.float32)
    mf = rng.normal(0, 0.35, (n_movies, rank)).astype(np.float32)
    ub = rng.normal(0, 0.4, n_users).astype(np.float32)
    mb = rng.normal(0, 0.5, n_movies).astype(np.float32)
    rating = np.empty(n, np.float32)
    step = 1 << 21
    for s in range(0, n, step):
        u, m = user[s:s + step], movie[s:s + step]
        r = 3.5 + ub[u] + mb[m] + np.einsum("ij,ij->i", uf[u], mf[m]) + rng.normal(0, 0.8, len(u))
        rating[s:s + step] = np.clip(np.round(r * 2) / 2, 0.5, 5.0)
    return {"user": user, "movie": movie, "rating": rating,
            "n_users": np.int64(n_users), "n_movies": np.int64(n_movies)}


def _unique(a: np.ndarray) -> np.ndarray:
    """Sorted distinct values (sort + diff: np.unique is ~100x slower than this on numpy 2.4 here)."""
    a = np.sort(a)
    keep = np.empty(len(a), bool)
    keep[:1] = True
    np.not_equal(a[1:], a[:-1], out=keep[1:])
    return a[keep]


#: Singular values of a trained model's movie factors, relative to the first: MovieLens 100K, the
#: trainer's defaults (k=64) gave 1, .49, .23, .19, .15, .12, .11, .10, .09, .08, then a floor
#: near .06-.08 (90 % of the variance in 8 directions). ``i^-1.1`` with a 0.06 floor follows it.
TRAINED_SPECTRUM_DECAY = 1.1
TRAINED_SPECTRUM_FLOOR = 0.06


def factor_model(n_movies: int, n_users: int, k: int = 64, seed: int = SEED,
                 structure: str = "trained") -> dict[str, np.ndarray]:
    """Synthetic factors of a ``dot`` model: ``movie_factors``, ``user_factors``, ``movie_bias``, ``rank_bias``, ...

    ``structure="trained"``: Gaussian factors with the spectrum and the offsets of a model trained
    on MovieLens 100K (movies: mean-vector norm 0.12, row norm ~0.45; users: 0.38 and ~0.6;
    movie biases sd 0.1), in a random basis; what an ANN index sees in production.
    ``structure="iid"``: independent N(0, 0.1) entries (bench/serving.py's model): no structure at
    all, the worst case for any ANN index.
    """
    rng = np.random.default_rng(seed)
    if structure == "iid":
        movie = rng.normal(0, 0.1, (n_movies, k)).astype(np.float32)
        user = rng.normal(0, 0.1, (n_users, k)).astype(np.float32)
    elif structure == "trained":
        spectrum = np.maximum(np.arange(1, k + 1) ** -TRAINED_SPECTRUM_DECAY, TRAINED_SPECTRUM_FLOOR)
        basis = np.linalg.qr(rng.normal(size=(k, k)))[0]
        mean = rng.normal(size=k)
        mean /= np.linalg.norm(mean)

        def draw(n: int, scale: float, offset: float) -> np.ndarray:
            out = np.empty((n, k), dtype=np.float32)
            for s in range(0, n, 1 << 18):  # in blocks: a million rows of float64 would be 0.5 GB
                rows = min(n, s + (1 << 18)) - s
                out[s:s + rows] = (rng.normal(size=(rows, k)) * spectrum) @ basis * scale + offset * mean
            return out

        movie, user = draw(n_movies, 0.5, 0.12), draw(n_users, 0.6, 0.38)
    else:
        raise ValueError(f"unknown structure {structure!r}")
    movie_bias = rng.normal(0, 0.1, n_movies).astype(np.float32)
    return {"user_ids": np.arange(1, n_users + 1, dtype=np.int64),
            "movie_ids": np.arange(1, n_movies + 1, dtype=np.int64),
            "user_factors": user, "movie_factors": movie, "user_bias": rng.normal(0, 0.1, n_users).astype(np.float32),
            "movie_bias": movie_bias, "rank_bias": movie_bias.copy()}


def cached(n: int) -> Path:
    """Path of the generated data set of ``n`` ratings (generated on first use)."""
    path = RAW / f"synth-{n}.npz"
    if not path.is_file():
        RAW.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        arrays = generate(n)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.rename(path)
        print(f"generated {path.name}: {n} ratings, {arrays['n_users']} users, {arrays['n_movies']} movies "
              f"in {time.perf_counter() - t0:.1f} s", flush=True)
    return path


def load(n: int) -> dict[str, np.ndarray]:
    with np.load(cached(n)) as z:
        return {k: z[k] for k in z.files}


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        d = load(int(float(arg)))
        counts = np.bincount(d["movie"], minlength=int(d["n_movies"]))
        top = np.sort(counts)[::-1]
        print(f"{arg}: users {d['n_users']}, movies {d['n_movies']}, mean rating {d['rating'].mean():.3f}, "
              f"sd {d['rating'].std():.3f}, top-1% movies hold {top[: max(1, len(top) // 100)].sum() / len(d['movie']):.1%}"
              f" of ratings, movies with < 5 ratings {np.mean(counts < 5):.1%}")
