"""Non-personalised ranking for anonymous visitors and users the model cannot place.

Score = damped mean rating, ``(sum + C * global_mean) / (count + C)``: a movie needs many ratings
to move far from the global mean, so three 5-star ratings do not beat a classic with thousands.
Computed from the database in one aggregate query and cached; the app refreshes it periodically
in the background, so requests never scan the ratings table.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from . import repository
from .catalogue import split_genres, wanted_genres
from .memory import release_free_memory
from .scoring import lookup_rows

log = logging.getLogger(__name__)

#: Prior strength C of the damped mean, in ratings.
DEFAULT_PRIOR = 25.0


@dataclass(frozen=True)
class PopularitySnapshot:
    """Movies ranked best first."""

    movie_ids: np.ndarray  # int64
    scores: np.ndarray  # float64
    counts: np.ndarray  # int64
    titles: list[str]
    years: list[int | None]
    genres: list[list[str]]
    genres_lower: list[frozenset[str]]
    computed_at: float
    ids_sorted: np.ndarray  # int64: movie_ids in increasing order, to look counts up by id
    counts_sorted: np.ndarray  # int64: their counts


class Popularity:
    """A cached popularity ranking, swapped atomically on refresh."""

    def __init__(self, sessions: sessionmaker[Session], prior: float = DEFAULT_PRIOR) -> None:
        self._sessions = sessions
        self.prior = prior
        self.snapshot: PopularitySnapshot | None = None
        self._lock = threading.Lock()

    def refresh(self) -> PopularitySnapshot:
        """Recompute from the database (one GROUP BY over ratings)."""
        with self._lock:
            with self._sessions() as session:
                rows = repository.popularity_stats(session)
            counts = np.array([r[4] for r in rows], dtype=np.int64)
            means = np.array([r[5] for r in rows], dtype=np.float64)
            total = counts.sum()
            global_mean = float((counts * means).sum() / total) if total else 0.0
            scores = (counts * means + self.prior * global_mean) / (counts + self.prior)
            # Ties (equal damped means) go to the movie with more ratings, then the lower id.
            ids = np.array([r[0] for r in rows], dtype=np.int64)
            order = np.lexsort((ids, -counts, -scores)) if len(rows) else np.zeros(0, dtype=np.intp)
            genres = [split_genres(rows[i][3]) for i in order]
            by_id = np.argsort(ids, kind="stable")
            snap = PopularitySnapshot(
                movie_ids=ids[order], scores=scores[order], counts=counts[order],
                titles=[rows[i][1] for i in order], years=[rows[i][2] for i in order], genres=genres,
                genres_lower=[frozenset(g.lower() for g in gs) for gs in genres], computed_at=time.time(),
                ids_sorted=ids[by_id], counts_sorted=counts[by_id],
            )
            self.snapshot = snap
        del rows
        release_free_memory()  # the query's rows, once per refresh (app.memory)
        return snap

    def counts(self, movie_ids: list[int]) -> list[int]:
        """How many ratings each of ``movie_ids`` has (0 for unrated movies), as of the last refresh."""
        snap = self.snapshot or self.refresh()
        if not snap.ids_sorted.size:  # nothing rated yet (a snapshot taken before the first import)
            return [0] * len(movie_ids)
        rows, found = lookup_rows(snap.ids_sorted, np.asarray(movie_ids, dtype=np.int64))
        return np.where(found, snap.counts_sorted[rows], 0).tolist()

    def top(self, n: int, genre: str | None = None, min_year: int | None = None,
            exclude: set[int] | None = None) -> list[dict[str, Any]]:
        """The ``n`` most popular movies passing the filters (``genre``: see :func:`wanted_genres`)."""
        snap = self.snapshot or self.refresh()
        wanted = wanted_genres(genre)
        out: list[dict[str, Any]] = []
        for i in range(len(snap.movie_ids)):
            movie_id = int(snap.movie_ids[i])
            if exclude and movie_id in exclude:
                continue
            if wanted is not None and wanted.isdisjoint(snap.genres_lower[i]):
                continue
            year = snap.years[i]
            if min_year is not None and (year is None or year < min_year):
                continue
            out.append({"movie_id": movie_id, "title": snap.titles[i], "year": year, "genres": snap.genres[i],
                        "score": float(snap.scores[i]), "ratings_count": int(snap.counts[i])})
            if len(out) >= n:
                break
        return out
