"""Ratings into contiguous arrays: from the database (streamed in chunks) or from MovieLens files.

Everything downstream works on :class:`Ratings`: dense 0-based ``int32`` user/movie indices,
``float32`` ratings and ``int64`` timestamps, plus the sorted external ids that map an index
back to a MovieLens id (exactly the ``user_ids``/``movie_ids`` tensors of the store).

Rows are put in a canonical order (by user, then movie) after loading, so the same data gives
the same arrays whatever order the database returned them in: training is then deterministic
for a given seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from movierec.db.schema import latest_valid_timestamp
from trainer import NoDataError, TrainerError

#: Rows fetched per round trip when streaming from the database.
DEFAULT_CHUNK = 65_536


@dataclass
class Ratings:
    """A set of ratings with dense indices. ``user[i]`` indexes ``user_ids`` (and likewise movies)."""

    user: np.ndarray  # (r,) int32, 0..n-1
    movie: np.ndarray  # (r,) int32, 0..m-1
    rating: np.ndarray  # (r,) float32
    rated_at: np.ndarray  # (r,) int64 epoch seconds
    user_ids: np.ndarray  # (n,) int64, strictly increasing
    movie_ids: np.ndarray  # (m,) int64, strictly increasing
    titles: dict[int, str] = field(default_factory=dict)  # MovieLens movie id -> title (for the report)

    def __len__(self) -> int:
        return int(self.rating.shape[0])

    @property
    def n_users(self) -> int:
        return int(self.user_ids.shape[0])

    @property
    def n_movies(self) -> int:
        return int(self.movie_ids.shape[0])

    def snapshot(self) -> dict[str, int | None]:
        """What the model was trained on: row count and newest timestamp (recorded in the manifest)."""
        return {
            "ratings": len(self),
            # The newest rating that is not in the future: the API uses the snapshot to tell which
            # users rated after training, and one rating dated in 2100 (stored before such dates
            # were refused) would otherwise hide every later rating from it.
            "max_rated_at": _newest_past(self.rated_at),
        }

    def subset(self, mask_or_index: np.ndarray) -> Ratings:
        """The same id maps with only the selected rows (indices stay valid)."""
        return Ratings(
            self.user[mask_or_index], self.movie[mask_or_index], self.rating[mask_or_index],
            self.rated_at[mask_or_index], self.user_ids, self.movie_ids, self.titles,
        )


def from_raw(
    user_ids: np.ndarray, movie_ids: np.ndarray, ratings: np.ndarray, rated_at: np.ndarray,
    titles: dict[int, str] | None = None,
) -> Ratings:
    """Build :class:`Ratings` from external ids; validates and puts rows in canonical order.

    Raises NoDataError when there is no rating and TrainerError for non-finite ratings.
    """
    user_ids = np.asarray(user_ids, dtype=np.int64)
    movie_ids = np.asarray(movie_ids, dtype=np.int64)
    values = np.asarray(ratings, dtype=np.float32)
    times = np.asarray(rated_at, dtype=np.int64)
    if values.shape[0] == 0:
        raise NoDataError("no ratings to train on: the ratings table is empty (load data first, e.g. `movierec data load`)")
    if not np.all(np.isfinite(values)):
        raise TrainerError("ratings contain NaN or infinite values")
    uniq_users, user = np.unique(user_ids, return_inverse=True)
    uniq_movies, movie = np.unique(movie_ids, return_inverse=True)
    user = user.astype(np.int32)
    movie = movie.astype(np.int32)
    # Canonical order: one int64 key sort is several times faster than lexsort on two columns.
    order = np.argsort(user.astype(np.int64) * len(uniq_movies) + movie, kind="stable")
    return Ratings(
        np.ascontiguousarray(user[order]), np.ascontiguousarray(movie[order]),
        np.ascontiguousarray(values[order]), np.ascontiguousarray(times[order]),
        uniq_users.astype(np.int64), uniq_movies.astype(np.int64), dict(titles or {}),
    )


def load_files(source: Path | str) -> Ratings:
    """Ratings from a MovieLens 100K directory or ``u.data`` file (tab-separated user, item, rating, ts).

    Titles come from ``movies.tsv`` (header, tab-separated id, title, ...) or ``u.item`` when present.
    """
    path = Path(source)
    data_file = path / "u.data" if path.is_dir() else path
    if not data_file.is_file():
        raise NoDataError(f"no ratings file at {data_file}")
    try:
        raw = np.loadtxt(data_file, dtype=np.int64, delimiter="\t", ndmin=2)
    except ValueError as exc:
        raise TrainerError(f"cannot parse {data_file}: {exc}") from exc
    if raw.size == 0:
        raise NoDataError(f"{data_file} holds no ratings")
    if raw.shape[1] < 4:
        raise TrainerError(f"{data_file}: expected 4 tab-separated columns, found {raw.shape[1]}")
    titles = _read_titles(data_file.parent)
    return from_raw(raw[:, 0], raw[:, 1], raw[:, 2].astype(np.float32), raw[:, 3], titles)


def _read_titles(folder: Path) -> dict[int, str]:
    titles: dict[int, str] = {}
    tsv, item = folder / "movies.tsv", folder / "u.item"
    if tsv.is_file():
        for line in tsv.read_text(encoding="utf-8", errors="replace").splitlines()[1:]:
            parts = line.split("\t")
            if len(parts) >= 2 and parts[0].isascii() and parts[0].isdigit():
                titles[int(parts[0])] = parts[1]
    elif item.is_file():
        for line in item.read_text(encoding="latin-1").splitlines():
            parts = line.split("|")
            if len(parts) >= 2 and parts[0].isascii() and parts[0].isdigit():
                titles[int(parts[0])] = parts[1]
    return titles


def load_db(url: str, chunk: int = DEFAULT_CHUNK, with_titles: bool = True, workers: int = 2) -> Ratings:
    """All ratings of the database at ``url`` as :class:`Ratings`.

    PostgreSQL 14+ packs the rows server-side and ``workers`` connections read page ranges of the
    table in one snapshot; SQLite streams ``chunk`` rows per round trip
    (:func:`movierec.db.ratings_reader.read_all`). Either way there is never a Python object per row.
    """
    from sqlalchemy import select
    from sqlalchemy.exc import SQLAlchemyError

    from movierec.db.engine import DatabaseError, make_engine
    from movierec.db.ratings_reader import read_all
    from movierec.db.schema import Movie

    engine = make_engine(url)
    try:
        columns = read_all(engine, workers=workers, chunk=chunk)
        titles: dict[int, str] = {}
        if with_titles and len(columns):
            with engine.connect() as conn:
                titles = dict(conn.execute(select(Movie.id, Movie.title)).tuples().all())
    except (SQLAlchemyError, DatabaseError) as exc:
        raise TrainerError(f"cannot read ratings from the database: {exc.__class__.__name__}: {exc}") from exc
    finally:
        engine.dispose()
    if len(columns) == 0:
        raise NoDataError("no ratings to train on: the ratings table is empty (load data first)")
    return from_raw(columns.user_id, columns.movie_id, columns.rating, columns.rated_at, titles)


def _newest_past(rated_at: np.ndarray) -> int | None:
    """The newest timestamp not past now (plus the allowed clock skew), None if there is none."""
    past = rated_at[rated_at <= latest_valid_timestamp()]
    return int(past.max()) if past.size else None
