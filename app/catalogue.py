"""Movie metadata from the database, aligned with a model version's movie rows.

The model scores rows; people are shown titles, years and genres, and filter by genre and year.
A :class:`Catalogue` is what the database holds (read once per model load); its
:meth:`Catalogue.aligned_to` a model's movie ids gives a :class:`ModelCatalogue`: the metadata
of every model row, which rows may be shown at all (a movie deleted from the database is never
recommended) and a precomputed mask per genre, so a filter is a few vector operations per request.
Like the model, it is read-only once built and shared by every request thread.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
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
    """Movie metadata from the database, sorted by id."""

    ids: np.ndarray  # (c,) int64, strictly increasing
    titles: Sequence[str]
    years: Sequence[int | None]
    genres: Sequence[str]  # pipe-separated, as stored

    @classmethod
    def from_rows(cls, rows: Sequence[tuple[int, str, int | None, str | None]]) -> Catalogue:
        """Build from ``(id, title, year, genres)`` rows in any order."""
        ordered = sorted(rows, key=lambda row: row[0])
        return cls(
            ids=np.fromiter((r[0] for r in ordered), dtype=np.int64, count=len(ordered)),
            titles=[r[1] for r in ordered],
            years=[r[2] for r in ordered],
            genres=[r[3] or "" for r in ordered],
        )

    @classmethod
    def empty(cls) -> Catalogue:
        return cls(ids=np.zeros(0, dtype=np.int64), titles=[], years=[], genres=[])

    def aligned_to(self, movie_ids: np.ndarray) -> ModelCatalogue:
        """The metadata of each model row (``movie_ids``: the model's, strictly increasing)."""
        return ModelCatalogue.build(self, movie_ids)


@dataclass(frozen=True)
class ModelCatalogue:
    """Metadata per model row; rows the database lacks have no title and are never shown."""

    movie_ids: np.ndarray  # (m,) int64: the model's movie ids
    in_catalogue: np.ndarray  # (m,) bool, read-only
    titles: list[str | None]
    years: np.ndarray  # (m,) float64, NaN when unknown
    genres: list[list[str]]
    genre_masks: dict[str, np.ndarray]  # lower-cased genre -> (m,) bool, read-only

    @classmethod
    def build(cls, catalogue: Catalogue, movie_ids: np.ndarray) -> ModelCatalogue:
        m = len(movie_ids)
        pos, found = lookup_rows(catalogue.ids, movie_ids)
        titles: list[str | None] = [None] * m
        years = np.full(m, np.nan)
        genres: list[list[str]] = [[] for _ in range(m)]
        genre_rows: dict[str, list[int]] = {}
        for row in np.flatnonzero(found):
            c = int(pos[row])
            titles[row] = catalogue.titles[c]
            year = catalogue.years[c]
            if year is not None:
                years[row] = year
            genres[row] = split_genres(catalogue.genres[c])
            for genre in genres[row]:
                genre_rows.setdefault(genre.lower(), []).append(int(row))
        genre_masks: dict[str, np.ndarray] = {}
        for genre, rows in genre_rows.items():
            mask = np.zeros(m, dtype=bool)
            mask[rows] = True
            genre_masks[genre] = mask
        for array in (found, years, *genre_masks.values()):
            array.setflags(write=False)
        return cls(np.asarray(movie_ids, dtype=np.int64), found, titles, years, genres, genre_masks)

    def allowed_mask(self, genre: str | None = None, min_year: int | None = None) -> np.ndarray:
        """Rows that may be shown: in the catalogue and matching the optional filters (a fresh array)."""
        mask = self.in_catalogue.copy()
        wanted = wanted_genres(genre)
        if wanted is not None:  # any of the wanted genres
            genre_mask = np.zeros_like(mask)
            for name in wanted:
                rows = self.genre_masks.get(name)
                if rows is not None:
                    genre_mask |= rows
            mask &= genre_mask
        if min_year is not None:
            with np.errstate(invalid="ignore"):
                mask &= self.years >= min_year
        return mask

    def year(self, row: int) -> int | None:
        """The release year of model row ``row``, if the catalogue has one."""
        year = self.years[row]
        return None if math.isnan(year) else int(year)
