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


def collect(chunks: Iterable[RatingChunk]) -> RatingSet:
    """Concatenate validated chunks, keep one row per (user, movie) and sort by that pair."""
    parts = list(chunks)
    # Ids were validated to 1..2**31 - 1, so int32 holds them.
    user = np.concatenate([c.user_id.astype(np.int32) for c in parts]) if parts else np.zeros(0, np.int32)
    movie = np.concatenate([c.movie_id.astype(np.int32) for c in parts]) if parts else np.zeros(0, np.int32)
    rating = np.concatenate([c.rating.astype(np.float32) for c in parts]) if parts else np.zeros(0, np.float32)
    stamp = np.concatenate([c.rated_at for c in parts]) if parts else np.zeros(0, np.int64)
    del parts
    read = len(user)
    key = (user.astype(np.int64) << 31) | movie
    # Stable: equal pairs stay in file order. MovieLens files come sorted by user (and often
    # movie), where the stable sort (timsort) is nearly linear.
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
