"""A whole ratings file as one set of unique (user, movie) rows, in primary-key order.

A file may rate the same movie twice for a user; the importer stores one rating per pair: the
latest, and of equally recent ones the later line (what applying the lines in order with the
"at least as recent" rule gives). Resolving that here, in numpy, means the database receives
rows that are already unique and sorted by (user_id, movie_id): a COPY straight into an empty
table, index builds over presorted keys, and conflict checks that walk the primary key in order.

Memory: about 24 bytes a rating (25 million ratings: ~0.6 GB) plus the sort's temporaries.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .movielens import RatingChunk


@dataclass
class RatingSet:
    """Unique (user_id, movie_id) ratings sorted by that pair, and how many rows the file had."""

    user_id: np.ndarray  # int32
    movie_id: np.ndarray  # int32
    rating: np.ndarray  # float32 (half stars are exact)
    rated_at: np.ndarray  # int64
    read: int  # rows read, duplicates included

    def __len__(self) -> int:
        return len(self.user_id)

    def slices(self, rows: int) -> Iterable[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """The columns in consecutive slices of at most ``rows`` rows."""
        for start in range(0, len(self), rows):
            end = start + rows
            yield (self.user_id[start:end], self.movie_id[start:end], self.rating[start:end],
                   self.rated_at[start:end])


def compact(chunk: RatingChunk) -> RatingChunk:
    """The chunk in the narrow types :func:`collect` keeps (ids were validated to fit int32), without line numbers."""
    return RatingChunk(chunk.user_id.astype(np.int32), chunk.movie_id.astype(np.int32),
                       chunk.rating.astype(np.float32), chunk.rated_at, np.zeros(0, np.int64))


def collect(chunks: Iterable[RatingChunk]) -> RatingSet:
    """Concatenate validated chunks, keep one row per (user, movie) and sort by that pair."""
    parts = list(chunks)
    # Ids were validated to 1..2**31 - 1, so int32 holds them.
    def column(name: str, dtype: type) -> np.ndarray:
        return np.concatenate([getattr(c, name).astype(dtype, copy=False) for c in parts]) if parts else np.zeros(0, dtype)

    user, movie = column("user_id", np.int32), column("movie_id", np.int32)
    rating, stamp = column("rating", np.float32), column("rated_at", np.int64)
    del parts
    read = len(user)
    key = (user.astype(np.int64) << 31) | movie
    if (key[1:] > key[:-1]).all():  # MovieLens files come sorted by user, then movie: nothing to do
        return RatingSet(user, movie, rating, stamp, read)
    # Stable: equal pairs stay in file order.
    order = np.argsort(key, kind="stable")
    key = key[order]
    keep = _winners(key, stamp[order])
    if keep is not None:
        order = order[keep]
    return RatingSet(user[order], movie[order], rating[order], stamp[order], read)


def _winners(key: np.ndarray, stamp: np.ndarray) -> np.ndarray | None:
    """Which rows of key-sorted (stably) rows survive; None when every pair is unique."""
    repeat = key[1:] == key[:-1]
    if not repeat.any():
        return None
    grouped = np.zeros(len(key), dtype=bool)
    grouped[1:] |= repeat
    grouped[:-1] |= repeat
    members = np.flatnonzero(grouped)  # positions in file order within each pair, by stability
    # Within a pair: newest timestamp last, and of equal timestamps the later line last.
    ranked = members[np.lexsort((members, stamp[members], key[members]))]
    last = np.ones(len(ranked), dtype=bool)
    last[:-1] = key[ranked[1:]] != key[ranked[:-1]]
    keep = ~grouped
    keep[ranked[last]] = True
    return keep
