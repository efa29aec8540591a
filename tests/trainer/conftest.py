"""Fixtures of the trainer tests: small synthetic ratings with a planted low-rank structure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trainer.data import Ratings, from_raw
from trainer.fit import FitParams


def planted(n_users: int = 120, n_movies: int = 80, per_user: int = 30, rank: int = 3, noise: float = 0.3,
            seed: int = 0) -> Ratings:
    """Ratings from ``3.3 + b_u + b_m + u·v + noise`` rounded to half stars; popular movies get rated more."""
    rng = np.random.default_rng(seed)
    u = rng.normal(0, 0.7, (n_users, rank))
    v = rng.normal(0, 0.7, (n_movies, rank))
    bu, bm = rng.normal(0, 0.3, n_users), rng.normal(0, 0.4, n_movies)
    pop = rng.zipf(1.5, n_movies).astype(float)
    pop = np.minimum(pop, 50) / np.minimum(pop, 50).sum()
    users, movies = [], []
    for i in range(n_users):
        chosen = rng.choice(n_movies, size=per_user, replace=False, p=pop)
        users.append(np.full(per_user, i))
        movies.append(chosen)
    user = np.concatenate(users)
    movie = np.concatenate(movies)
    value = 3.3 + bu[user] + bm[movie] + (u[user] * v[movie]).sum(1) + rng.normal(0, noise, len(user))
    value = np.clip(np.round(value * 2) / 2, 0.5, 5.0)
    times = 880_000_000 + rng.integers(0, 10_000_000, len(user))
    # External ids deliberately sparse and not starting at 0.
    return from_raw(user * 3 + 7, movie * 5 + 11, value, times, {int(m * 5 + 11): f"Movie {m}" for m in range(n_movies)})


@pytest.fixture(autouse=True)
def pinned_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """One training thread unless a test says otherwise: the default follows the load average, and
    BLAS results differ in the last bits between thread counts (same-seed tests compare exactly)."""
    monkeypatch.setenv("MOVIEREC_TRAIN_THREADS", "1")


@pytest.fixture(scope="session")
def synth() -> Ratings:
    return planted()


@pytest.fixture
def fast_params() -> FitParams:
    """Small, quick parameters that still learn the planted structure."""
    return FitParams(model="dot", factors=8, epochs=12, lr=0.02, wd=0.02, batch_size=256, rank_weight=0.5, seed=1)


def write_udata(path: Path, ratings: Ratings) -> Path:
    """Write ratings as a MovieLens ``u.data`` file."""
    path.mkdir(parents=True, exist_ok=True)
    rows = np.column_stack([ratings.user_ids[ratings.user], ratings.movie_ids[ratings.movie],
                            ratings.rating.astype(np.int64), ratings.rated_at])
    np.savetxt(path / "u.data", rows, fmt="%d", delimiter="\t")
    return path
