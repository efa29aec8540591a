"""Non-personalised ranking for anonymous visitors and users the model cannot place.

Score = damped mean rating, ``(sum + C * global_mean) / (count + C)``: a movie needs many ratings
to move far from the global mean, so three 5-star ratings do not beat a classic with thousands.
Computed from the database in one aggregate query and cached; the app refreshes it periodically
in the background, so requests never scan the ratings table.

The table is held in flat arrays, the rated movies' metadata as a :class:`ModelCatalogue` (one
title blob, genre masks), not as Python objects per movie: per-movie lists, strings and sets were
~44 MiB in every server worker with 100,000 rated movies (and would be ~0.7 GB with a million),
and a refresh that built them held the GIL long enough to stall requests (docs/benchmarks.md).
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
from .catalogue import ModelCatalogue, wanted_genres
from .memory import release_free_memory
from .scoring import lookup_rows

log = logging.getLogger(__name__)

#: Prior strength C of the damped mean, in ratings.
DEFAULT_PRIOR = 25.0
#: Ranked movies :meth:`Popularity.top` checks against the filters at once (grown 4x per step).
FIRST_STEP = 256
#: The periodic refresh rebuilds the table at least this often even when the ratings' fingerprint
#: has not moved (what the fingerprint cannot see: a movie's title or genres edited in place).
MAX_AGE_S = 600.0


@dataclass(frozen=True)
class PopularitySnapshot:
    """Movies ranked best first (``movie_ids``, ``scores``, ``counts``), and their metadata."""

    movie_ids: np.ndarray  # int64, best first
    scores: np.ndarray  # float64
    counts: np.ndarray  # int64
    computed_at: float
    ids_sorted: np.ndarray  # int64: movie_ids in increasing order, to look counts up by id
    counts_sorted: np.ndarray  # int64: their counts
    meta: ModelCatalogue  # title, year, genres of each row of ids_sorted
    rank_rows: np.ndarray  # intp: the row of meta of each ranked movie (best first)


class Popularity:
    """A cached popularity ranking, swapped atomically on refresh."""

    def __init__(self, sessions: sessionmaker[Session], prior: float = DEFAULT_PRIOR) -> None:
        self._sessions = sessions
        self.prior = prior
        self.snapshot: PopularitySnapshot | None = None
        self._lock = threading.Lock()
        self._fingerprint: tuple[object, ...] | None = None  # of the data the snapshot was built from

    def refresh_if_changed(self) -> PopularitySnapshot:
        """The periodic refresh: rebuild only when the ratings or movies changed (their
        :func:`~app.repository.ratings_fingerprint`) or the table is MAX_AGE_S old.

        Rebuilding reads a row per rated movie through the driver, which takes and releases the
        GIL per row: every minute, that stalled the requests of the worker (/recommend p99 at
        1 connection 65-121 ms in the rounds it hit, 6-8 ms in the others; docs/benchmarks.md).
        The fingerprint is a handful of values computed inside the database.
        """
        with self._sessions() as session:
            fingerprint = repository.ratings_fingerprint(session)
        snap = self.snapshot
        if snap is not None and fingerprint == self._fingerprint and time.time() - snap.computed_at < MAX_AGE_S:
            return snap
        return self.refresh(fingerprint)

    def refresh(self, fingerprint: tuple[object, ...] | None = None) -> PopularitySnapshot:
        """Recompute from the database (one GROUP BY over ratings). ``fingerprint``: the data's,
        taken before (see :meth:`refresh_if_changed`); None takes it here."""
        with self._lock:
            with self._sessions() as session:
                if fingerprint is None:
                    fingerprint = repository.ratings_fingerprint(session)
                rows = repository.popularity_stats(session)  # in id order
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            counts = np.fromiter((r[4] for r in rows), dtype=np.int64, count=len(rows))
            means = np.fromiter((r[5] for r in rows), dtype=np.float64, count=len(rows))
            total = counts.sum()
            global_mean = float((counts * means).sum() / total) if total else 0.0
            scores = (counts * means + self.prior * global_mean) / (counts + self.prior)
            # Ties (equal damped means) go to the movie with more ratings, then the lower id.
            order = np.lexsort((ids, -counts, -scores)) if len(rows) else np.zeros(0, dtype=np.intp)
            meta = ModelCatalogue.from_chunks([rows], ids)  # rows: (id, title, year, genres, ...)
            snap = PopularitySnapshot(
                movie_ids=ids[order], scores=scores[order], counts=counts[order], computed_at=time.time(),
                ids_sorted=ids, counts_sorted=counts, meta=meta, rank_rows=order,
            )
            self.snapshot, self._fingerprint = snap, fingerprint
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
        meta, wanted = snap.meta, wanted_genres(genre)
        excluded = np.fromiter(exclude, dtype=np.int64, count=len(exclude)) if exclude else None
        out: list[dict[str, Any]] = []
        start, step = 0, max(FIRST_STEP, 2 * n)
        while start < len(snap.movie_ids) and len(out) < n:
            # The filters on a slice of the ranking at a time: the first slice is usually enough.
            rows = snap.rank_rows[start:start + step]
            keep = meta.in_catalogue[rows]
            if wanted is not None:
                keep &= meta.any_genre(wanted, rows)
            if min_year is not None:
                with np.errstate(invalid="ignore"):  # NaN: no year, never passes a year filter
                    keep &= meta.years[rows] >= min_year
            if excluded is not None:
                keep &= ~np.isin(snap.movie_ids[start:start + step], excluded)
            for i in np.flatnonzero(keep)[:n - len(out)].tolist():
                row, rank = int(rows[i]), start + i
                out.append({"movie_id": int(snap.movie_ids[rank]), "title": meta.titles[row], "year": meta.year(row),
                            "genres": meta.genres[row], "score": float(snap.scores[rank]),
                            "ratings_count": int(snap.counts[rank])})
            start, step = start + step, step * 4
        return out
