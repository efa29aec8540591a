"""Movie metadata from the database, aligned with a model version's movie rows.

The model scores rows; people are shown titles, years and genres, and filter by genre and year.
A :class:`ModelCatalogue` holds the metadata of every model row, which rows may be shown at all
(a movie deleted from the database is never recommended) and a bit mask per genre, so a filter is
a few vector operations per request. It is built once per model load by streaming the movies
table in id order (:meth:`ModelCatalogue.from_chunks`), or from rows in memory
(:meth:`Catalogue.aligned_to`, for tests and tools). Like the model, it is read-only once built
and shared by every request thread.

It is held in a handful of flat arrays, not as Python objects per movie: at a million movies the
lists of titles and genre lists were ~560 MB in every worker (more than the model, which the
workers share; docs/benchmarks.md), the arrays are ~50 MB. A title or genre list is decoded only
for the rows a response shows.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .scoring import lookup_rows


def split_genres(genres: str) -> list[str]:
    """``"Comedy|Drama"`` -> ``["Comedy", "Drama"]`` (empty parts dropped)."""
    return [g for g in genres.split("|") if g]


def wanted_genres(genre: str | None) -> frozenset[str] | None:
    """The ``genre`` filter's meaning, the same on every endpoint: any of the ``|``-separated
    genres, compared whole and case-insensitively (lower-cased names). None: no filter."""
    if not genre:
        return None
    names = frozenset(name.strip().lower() for name in genre.split("|") if name.strip())
    return names or None


@dataclass(frozen=True)
class Catalogue:
    """Movie metadata rows in memory (tests and tools; the server streams them, see :meth:`ModelCatalogue.from_chunks`)."""

    rows: Sequence[tuple[int, str, int | None, str | None]]

    @classmethod
    def from_rows(cls, rows: Sequence[tuple[int, str, int | None, str | None]]) -> Catalogue:
        """From ``(id, title, year, genres)`` rows in any order."""
        return cls(sorted(rows, key=lambda row: row[0]))

    @classmethod
    def empty(cls) -> Catalogue:
        return cls([])

    def aligned_to(self, movie_ids: np.ndarray) -> ModelCatalogue:
        """The metadata of each model row (``movie_ids``: the model's, strictly increasing)."""
        return ModelCatalogue.from_chunks([self.rows], movie_ids)


class Titles:
    """The title of each model row (None for rows the database lacks), decoded from one UTF-8 blob."""

    def __init__(self, blob: bytes, offsets: np.ndarray, present: np.ndarray) -> None:
        self._blob, self._offsets, self._present = blob, offsets, present

    def __len__(self) -> int:
        return len(self._present)

    def __getitem__(self, row: int) -> str | None:
        if not self._present[row]:
            return None
        return self._blob[int(self._offsets[row]):int(self._offsets[row + 1])].decode()

    def many(self, rows: np.ndarray) -> list[str | None]:
        """The titles of ``rows`` (an integer array): one gather of the offsets instead of one per title."""
        blob = self._blob
        return [blob[start:end].decode() if present else None
                for start, end, present in zip(self._offsets[rows].tolist(), self._offsets[rows + 1].tolist(),
                                               self._present[rows].tolist(), strict=True)]


class Genres:
    """The genre names of each model row, as stored (``[]`` for rows the database lacks)."""

    def __init__(self, names: list[str], flat: np.ndarray, offsets: np.ndarray) -> None:
        self._names, self._flat, self._offsets = names, flat, offsets

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, row: int) -> list[str]:
        names = self._names
        return [names[g] for g in self._flat[int(self._offsets[row]):int(self._offsets[row + 1])].tolist()]


def _offsets(lengths: np.ndarray) -> np.ndarray:
    """Start of each item in a flat array, and its end (``len(lengths) + 1`` values): int32 when they fit."""
    ends = np.cumsum(lengths)
    dtype = np.int32 if not len(ends) or ends[-1] < 2**31 else np.int64
    out = np.zeros(len(lengths) + 1, dtype=dtype)
    out[1:] = ends
    return out


@dataclass(frozen=True)
class ModelCatalogue:
    """Metadata per model row; rows the database lacks have no title and are never shown."""

    movie_ids: np.ndarray  # (m,) int64: the model's movie ids
    in_catalogue: np.ndarray  # (m,) bool, read-only
    titles: Titles
    years: np.ndarray  # (m,) float32, NaN when unknown (exact for any year)
    genres: Genres
    genre_bits: dict[str, np.ndarray]  # lower-cased genre -> packed (m,) mask (np.packbits), read-only

    @classmethod
    def from_chunks(cls, chunks: Iterable[Sequence[tuple[int, str, int | None, str | None]]],
                    movie_ids: np.ndarray) -> ModelCatalogue:
        """Align ``(id, title, year, genres)`` rows, streamed in chunks in increasing id order, with
        the model's rows (``movie_ids``, strictly increasing). Memory: the arrays, plus one chunk."""
        movie_ids = np.asarray(movie_ids, dtype=np.int64)
        m = len(movie_ids)
        present = np.zeros(m, dtype=bool)
        years = np.full(m, np.nan, dtype=np.float32)
        title_len = np.zeros(m, dtype=np.int64)
        genre_count = np.zeros(m, dtype=np.int64)
        blobs: list[bytes] = []
        flat = array("i")  # 4 bytes a genre (a list of ints: 8 bytes a pointer, and fragments the heap)
        names: list[str] = []
        index: dict[str, int] = {}  # genre name as stored -> position in names
        parsed: dict[str, list[int]] = {}  # a genres string -> its names' positions (few distinct strings)
        last = None
        for chunk in chunks:
            if not chunk:
                continue
            ids = np.fromiter((r[0] for r in chunk), dtype=np.int64, count=len(chunk))
            if (last is not None and ids[0] <= last) or (len(ids) > 1 and not np.all(np.diff(ids) > 0)):
                raise ValueError("catalogue rows must come in strictly increasing id order")
            last = int(ids[-1])
            rows, found = lookup_rows(movie_ids, ids)
            titles = []
            for i in np.flatnonzero(found).tolist():
                _, title, year, genre_text = chunk[i]
                row = int(rows[i])
                encoded = (title or "").encode()
                titles.append(encoded)
                title_len[row] = len(encoded)
                if year is not None:
                    years[row] = year
                positions = parsed.get(genre_text or "")
                if positions is None:
                    positions = []
                    for name in split_genres(genre_text or ""):
                        if name not in index:
                            index[name] = len(names)
                            names.append(name)
                        positions.append(index[name])
                    parsed[genre_text or ""] = positions
                flat.extend(positions)
                genre_count[row] = len(positions)
            present[rows[found]] = True
            blobs.append(b"".join(titles))
        title_offsets = _offsets(title_len)
        genre_offsets = _offsets(genre_count)
        flat_array = np.frombuffer(flat, dtype=np.int32).copy() if flat else np.zeros(0, dtype=np.int32)
        del flat
        row_of = np.repeat(np.arange(m), genre_count)
        masks: dict[str, np.ndarray] = {}
        for position, name in enumerate(names):  # spellings of one genre share its lower-cased mask
            mask = masks.setdefault(name.lower(), np.zeros(m, dtype=bool))
            mask[row_of[flat_array == position]] = True
        bits = {name: np.packbits(mask) for name, mask in masks.items()}
        for frozen in (present, years, title_offsets, flat_array, genre_offsets, *bits.values()):
            frozen.setflags(write=False)
        return cls(movie_ids, present, Titles(b"".join(blobs), title_offsets, present), years,
                   Genres(names, flat_array, genre_offsets), bits)

    def allowed_mask(self, genre: str | None = None, min_year: int | None = None) -> np.ndarray:
        """Rows that may be shown: in the catalogue and matching the optional filters (a fresh array)."""
        mask = self.in_catalogue.copy()
        wanted = wanted_genres(genre)
        if wanted is not None:  # any of the wanted genres
            packed = np.zeros((len(mask) + 7) // 8, dtype=np.uint8)
            for name in wanted:
                bits = self.genre_bits.get(name)
                if bits is not None:
                    packed |= bits
            mask &= np.unpackbits(packed, count=len(mask)).view(bool)
        if min_year is not None:
            with np.errstate(invalid="ignore"):
                mask &= self.years >= min_year
        return mask

    def year(self, row: int) -> int | None:
        """The release year of model row ``row``, if the catalogue has one."""
        year = float(self.years[row])
        return None if math.isnan(year) else int(year)
