"""Test helpers: tiny valid models in a real model store, and seeded databases."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, insert

from movierec import ann_index
from movierec.db.schema import Movie, Rating
from movierec.store import ModelStore

GENRES = ("Action", "Comedy", "Drama", "Sci-Fi", "Romance")


def random_dot_tensors(user_ids: Sequence[int], movie_ids: Sequence[int], k: int = 8, seed: int = 0,
                       scale: float = 0.5, rank_bias: bool = True) -> dict[str, np.ndarray]:
    """Random factors and biases for a ``dot`` model over the given (sorted, unique) ids."""
    rng = np.random.default_rng(seed)
    n, m = len(user_ids), len(movie_ids)
    tensors = {
        "user_ids": np.asarray(sorted(user_ids), dtype=np.int64),
        "movie_ids": np.asarray(sorted(movie_ids), dtype=np.int64),
        "user_factors": (rng.normal(size=(n, k)) * scale).astype(np.float32),
        "movie_factors": (rng.normal(size=(m, k)) * scale).astype(np.float32),
        "user_bias": (rng.normal(size=n) * 0.2).astype(np.float32),
        "movie_bias": (rng.normal(size=m) * 0.2).astype(np.float32),
    }
    if rank_bias:
        tensors["rank_bias"] = (rng.normal(size=m) * 0.2).astype(np.float32)
    return tensors


def manifest_for(tensors: dict[str, np.ndarray], kind: str = "dot", max_rated_at: int | None = 1_000,
                 **extra: Any) -> dict[str, Any]:
    """A manifest with every required key for ``tensors``."""
    return {
        "kind": kind,
        "factors": int(tensors["user_factors"].shape[1]),
        "y_range": [0.0, 5.5],
        "rating_scale": [0.5, 5.0],
        "global_bias": 0.3,
        "counts": {"users": len(tensors["user_ids"]), "movies": len(tensors["movie_ids"])},
        "data_snapshot": {"rows": 100, "max_rated_at": max_rated_at},
        "metrics": {"rmse": 0.9},
        "baseline_metrics": {"rmse": 1.0},
        **extra,
    }


def publish_dot(store_root: Path, user_ids: Sequence[int], movie_ids: Sequence[int], k: int = 8, seed: int = 0,
                pngs: Iterable[str] = (), ann: bool = False, **manifest_extra: Any) -> int:
    """Publish a random dot model and return its version (``ann``: with its ANN indexes, as a trainer would)."""
    tensors = random_dot_tensors(user_ids, movie_ids, k=k, seed=seed)

    def extra(directory: Path) -> None:
        for name in pngs:
            (directory / name).write_bytes(b"\x89PNG\r\n\x1a\n" + name.encode())
        if ann:
            ann_index.write_for_version(directory, tensors, "dot")

    return ModelStore(store_root).publish(tensors, manifest_for(tensors, **manifest_extra), extra_files=extra)


def seed_movies(engine: Engine, movie_ids: Iterable[int]) -> None:
    """Movies ``Movie <id>`` with a year and one or two genres derived from the id."""
    rows = [{"id": i, "title": f"Movie {i}", "year": 1980 + i % 40,
             "genres": "|".join(sorted({GENRES[i % len(GENRES)], GENRES[(i // 3) % len(GENRES)]}))}
            for i in movie_ids]
    with engine.begin() as conn:
        conn.execute(insert(Movie), rows)


def seed_ratings(engine: Engine, rows: Iterable[tuple[int, int, float, int]]) -> None:
    """Insert ``(user_id, movie_id, rating, rated_at)`` rows."""
    data = [{"user_id": u, "movie_id": m, "rating": r, "rated_at": t} for u, m, r, t in rows]
    if data:
        with engine.begin() as conn:
            conn.execute(insert(Rating), data)


def query_outcome(client: Any, path: str, params: Any) -> tuple[int, object]:
    """Status and body of a GET, with a 422's errors reduced to what must match between two parsers
    of the same query (type, location, input), in a stable order."""
    response = client.get(path, params=params)
    body = response.json()
    if response.status_code == 422:
        return 422, sorted((e["type"], tuple(e["loc"]), str(e.get("input"))) for e in body["detail"])
    return response.status_code, body
