"""The item-item term of the ranking score: a sparse movie x movie matrix ``W`` stored with a model version.

For a user whose rated movies (model rows) are ``R``, the term adds ``sum_{j in R} W[j, i]`` to the
ranking score of movie ``i`` (see :mod:`movierec.model_format`). Row ``j`` of ``W`` says which movies
having rated ``j`` pushes up, and by how much; the trainer stores the blend weight already multiplied
in, so serving is one sparse sum over the user's rated rows and needs nothing else.

``W`` is kept as CSR (three tensors: ``item_indptr``, ``item_indices``, ``item_weights``). Both the
trainer (which builds it, :func:`from_dense_topk`) and the API (which scores and explains with it,
:class:`ItemTerm`) use this module, so the format has one definition.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

#: Names of the three CSR tensors in ``model.safetensors``.
TENSORS = ("item_indptr", "item_indices", "item_weights")


class ItemTermError(ValueError):
    """The three tensors do not form a valid CSR matrix over the model's movies."""


@dataclass(frozen=True)
class ItemTerm:
    """An immutable CSR movie x movie matrix; row = rated movie, column = movie whose score it adds to."""

    indptr: np.ndarray  # (m + 1,) int64
    indices: np.ndarray  # (nnz,) int32
    weights: np.ndarray  # (nnz,) float32

    def __post_init__(self) -> None:
        # Rows of one common length (what the trainer stores: k neighbours each) can be gathered as a
        # 2-d view in one fancy-indexing step, several times faster than the general CSR gather.
        lengths = np.diff(self.indptr) if self.indptr.size > 1 else np.zeros(0, np.int64)
        width = int(lengths[0]) if lengths.size and np.all(lengths == lengths[0]) else -1
        grid = None
        if width > 0:
            grid = (self.indices.reshape(-1, width), self.weights.reshape(-1, width))
        object.__setattr__(self, "_grid", grid)

    @property
    def n_movies(self) -> int:
        return int(self.indptr.size - 1)

    @property
    def nnz(self) -> int:
        return int(self.indices.size)

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, np.ndarray], n_movies: int | None = None) -> ItemTerm | None:
        """The term of a version's tensors; None when the version has none (older models).

        Raises :class:`ItemTermError` when only some of the tensors are present or they are inconsistent.
        """
        present = [name for name in TENSORS if name in tensors]
        if not present:
            return None
        if len(present) != len(TENSORS):
            raise ItemTermError(f"item term incomplete: has {present}, needs all of {list(TENSORS)}")
        term = cls(np.asarray(tensors["item_indptr"]), np.asarray(tensors["item_indices"]),
                   np.asarray(tensors["item_weights"]))
        term.check(n_movies)
        return term

    def check(self, n_movies: int | None = None) -> None:
        """Raise :class:`ItemTermError` unless this is a valid CSR matrix (over ``n_movies`` when given)."""
        p, idx, w = self.indptr, self.indices, self.weights
        if p.ndim != 1 or p.size < 1 or p.dtype != np.int64:
            raise ItemTermError("item_indptr must be a non-empty 1-d int64 array")
        m = p.size - 1
        if n_movies is not None and m != n_movies:
            raise ItemTermError(f"item term has {m} rows, the model {n_movies} movies")
        if idx.dtype != np.int32 or w.dtype != np.float32 or idx.shape != w.shape or idx.ndim != 1:
            raise ItemTermError("item_indices (int32) and item_weights (float32) must be 1-d of equal length")
        if p[0] != 0 or p[-1] != idx.size or np.any(np.diff(p) < 0):
            raise ItemTermError("item_indptr is not a valid row-pointer array")
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= m):
            raise ItemTermError("item_indices out of range")
        if not np.all(np.isfinite(w)):
            raise ItemTermError("item_weights hold NaN or infinity")

    def tensors(self) -> dict[str, np.ndarray]:
        """The three tensors to store."""
        return {"item_indptr": self.indptr, "item_indices": self.indices, "item_weights": self.weights}

    def _gather(self, rated_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions into indices/weights of the rows ``rated_rows`` (concatenated), and each one's row number."""
        rows = np.asarray(rated_rows, dtype=np.int64)
        starts, ends = self.indptr[rows], self.indptr[rows + 1]
        lengths = ends - starts
        total = int(lengths.sum())
        # Position k of the concatenation belongs to row r: start[r] + (k - offset[r]).
        offsets = np.cumsum(lengths) - lengths
        which = np.repeat(np.arange(rows.size), lengths)
        pos = np.arange(total, dtype=np.int64) + np.repeat(starts - offsets, lengths)
        return pos, which

    def scores(self, rated_rows: np.ndarray) -> np.ndarray:
        """``sum_{j in rated_rows} W[j, :]``: (n_movies,) float32 (zeros for no rated rows)."""
        rows = np.asarray(rated_rows, dtype=np.int64)
        if rows.size == 0:
            return np.zeros(self.n_movies, dtype=np.float32)
        if self._grid is not None:
            cols, weights = self._grid
            return np.bincount(cols[rows].ravel(), weights=weights[rows].ravel(),
                               minlength=self.n_movies).astype(np.float32)
        pos, _ = self._gather(rows)
        return np.bincount(self.indices[pos], weights=self.weights[pos], minlength=self.n_movies).astype(np.float32)

    def scores_many(self, rated: list[np.ndarray]) -> np.ndarray:
        """:meth:`scores` of several users at once: (len(rated), n_movies) float32."""
        out = np.zeros((len(rated), self.n_movies), dtype=np.float32)
        for i, rows in enumerate(rated):
            out[i] = self.scores(rows)
        return out

    def contributions(self, rated_rows: np.ndarray, target_rows: np.ndarray) -> np.ndarray:
        """``W[rated_rows[j], target_rows[i]]`` as a (len(target_rows), len(rated_rows)) float32 array.

        How much each rated movie added to each target movie's score (0 where it is not a neighbour):
        the "because you rated" weights.
        """
        rated = np.asarray(rated_rows, dtype=np.int64)
        targets = np.asarray(target_rows, dtype=np.int64)
        out = np.zeros((targets.size, rated.size), dtype=np.float32)
        if rated.size == 0 or targets.size == 0:
            return out
        pos, which = self._gather(rated)
        cols = self.indices[pos]
        # Column -> position in targets (-1 when not a target); targets may repeat, so map the first.
        lookup = np.full(self.n_movies, -1, dtype=np.int64)
        lookup[targets[::-1]] = np.arange(targets.size - 1, -1, -1)
        hit = lookup[cols] >= 0
        out[lookup[cols[hit]], which[hit]] = self.weights[pos[hit]]
        dup = np.flatnonzero(lookup[targets] != np.arange(targets.size))
        out[dup] = out[lookup[targets[dup]]]
        return out

    @functools.cached_property
    def has_repeated_columns(self) -> bool:
        """True when some row lists a column twice (the trainer never writes one; checked once, lazily).

        :meth:`scores` adds such entries up while :meth:`contributions` keeps one of them, so a
        sparse explanation (:meth:`hits`) is only equivalent to the dense one without repeats.
        """
        if self.nnz == 0:
            return False
        if self._grid is not None:
            cols = np.sort(self._grid[0], axis=1)
            return bool(np.any(cols[:, 1:] == cols[:, :-1]))
        row_of = np.repeat(np.arange(self.n_movies, dtype=np.int64), np.diff(self.indptr))
        key = np.sort(row_of * self.n_movies + self.indices)
        return bool(np.any(key[1:] == key[:-1]))

    def hits(self, rated_rows: np.ndarray, target_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The stored entries of ``W[rated_rows, target_rows]``, as coordinates instead of a dense matrix.

        Returns ``(target_pos, rated_pos, weights)``: entry ``k`` is ``W[rated_rows[rated_pos[k]],
        target_rows[target_pos[k]]] = weights[k]`` (float32). A target listed more than once is
        reported at its first position only. Same values as :meth:`contributions` (where a row lists
        no column twice, see :attr:`has_repeated_columns`) without the ``(targets, rated)`` matrix:
        one gather of the rated rows (``|rated| x`` neighbours), one table lookup, one ``nonzero``.
        """
        rated = np.asarray(rated_rows, dtype=np.int64)
        targets = np.asarray(target_rows, dtype=np.int64)
        if rated.size == 0 or targets.size == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
        is_target = np.zeros(self.n_movies, dtype=bool)
        is_target[targets] = True
        # Column -> first position in targets; read only at target columns, so never initialised elsewhere.
        position = np.empty(self.n_movies, dtype=np.int64)
        position[targets[::-1]] = np.arange(targets.size - 1, -1, -1)
        if self._grid is not None:
            cols, weights = self._grid
            width = cols.shape[1]
            neighbours = cols[rated]  # (|rated|, width), a fresh C-ordered array: ravel() is a view
            hit = is_target[neighbours].ravel().nonzero()[0]
            rated_pos, slot = np.divmod(hit, width)
            return position[neighbours.ravel()[hit]], rated_pos, weights[rated[rated_pos], slot]
        pos, which = self._gather(rated)
        cols = self.indices[pos]
        hit = is_target[cols].nonzero()[0]
        return position[cols[hit]], which[hit], self.weights[pos[hit]]


def from_dense_topk(matrix: np.ndarray, neighbours: int, scale: float = 1.0) -> ItemTerm:
    """Keep, in each row of a dense (m, m) matrix, the ``neighbours`` entries largest in absolute value
    (zeros dropped), times ``scale``: the sparse term a model version stores."""
    a = np.asarray(matrix, dtype=np.float32)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ItemTermError(f"need a square matrix, got shape {a.shape}")
    m = a.shape[0]
    k = max(0, min(int(neighbours), m))
    if k == 0 or m == 0:
        return ItemTerm(np.zeros(m + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32))
    if k < m:
        cols = np.argpartition(-np.abs(a), k - 1, axis=1)[:, :k]
    else:
        cols = np.broadcast_to(np.arange(m), (m, m))
    cols = np.sort(cols, axis=1)
    vals = np.take_along_axis(a, cols, axis=1)
    keep = vals != 0
    counts = keep.sum(axis=1)
    indptr = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    return ItemTerm(indptr, cols[keep].astype(np.int32), (vals[keep] * np.float32(scale)).astype(np.float32))
