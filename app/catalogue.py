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

import contextlib
import hashlib
import json
import math
import os
import stat
import tempfile
import time
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from movierec.mapped_tensors import MalformedTensorsError, map_tensors

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

    def __init__(self, blob: np.ndarray, offsets: np.ndarray, present: np.ndarray) -> None:
        self._blob, self._offsets, self._present = blob, offsets, present  # blob: uint8

    def __len__(self) -> int:
        return len(self._present)

    def __getitem__(self, row: int) -> str | None:
        if not self._present[row]:
            return None
        return self._blob[int(self._offsets[row]):int(self._offsets[row + 1])].tobytes().decode()

    def many(self, rows: np.ndarray) -> list[str | None]:
        """The titles of ``rows`` (an integer array): one gather of the offsets instead of one per title."""
        blob = memoryview(self._blob)  # uint8 array (possibly a shared read-only map): slices without copies
        return [str(blob[start:end], "utf-8") if present else None
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
        the model's rows (``movie_ids``, strictly increasing). Memory: the arrays, plus one chunk.
        A row may carry more fields after these four (ignored)."""
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
                title, year, genre_text = chunk[i][1:4]
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
        blob = np.frombuffer(b"".join(blobs), dtype=np.uint8)  # read-only: a view of the bytes
        for frozen in (present, years, title_offsets, flat_array, genre_offsets, *bits.values()):
            frozen.setflags(write=False)
        return cls(movie_ids, present, Titles(blob, title_offsets, present), years,
                   Genres(names, flat_array, genre_offsets), bits)

    # -- sharing between the server's workers ------------------------------------------------------

    def _arrays(self) -> tuple[dict[str, np.ndarray], list[str], list[str]]:
        """The arrays that make up this catalogue (the genre masks as ``bits.<i>``), the genre
        names as stored, and the lower-cased names of the masks, in their order."""
        masks = list(self.genre_bits)
        arrays = {"in_catalogue": self.in_catalogue, "years": self.years, "title_blob": self.titles._blob,
                  "title_offsets": self.titles._offsets, "genre_flat": self.genres._flat,
                  "genre_offsets": self.genres._offsets}
        arrays.update({f"bits.{i}": self.genre_bits[name] for i, name in enumerate(masks)})
        return arrays, list(self.genres._names), masks

    def shared(self, directory: Path) -> ModelCatalogue:
        """The same catalogue over a read-only map of a file in ``directory`` named by its content.

        Every worker of a server builds its catalogue from the same database, so their arrays
        are equal: the first writes them to the file, the others find it (and compare it with
        what they built: a file that differs is written again), and all of them map it. Its
        pages are then the page cache, one copy for all the workers instead of one each (~50 MB
        at a million movies; docs/benchmarks.md#worker-memory). Files not used for
        :data:`SHARED_MAX_AGE_S` are removed; a mapped file stays valid when removed.
        """
        arrays, names, masks = self._arrays()
        digest = hashlib.sha256(json.dumps([names, masks]).encode())
        for name, array in arrays.items():
            digest.update(f"{name} {array.dtype.str} {array.shape}".encode())
            digest.update(_bytes_of(array))
        path = directory / f"catalogue-{digest.hexdigest()[:32]}.safetensors"
        mapped = _map_if_equal(path, arrays)
        if mapped is None:
            tmp = directory / f".{path.name}.{os.getpid()}.tmp"
            try:
                save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp))
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
            mapped = _map_if_equal(path, arrays)
            if mapped is None:  # cannot happen unless someone writes there at the same time
                return self
        with contextlib.suppress(OSError):
            os.utime(path)  # in use: not removed by _prune
        _prune(directory, keep=path)
        bits = {name: mapped[f"bits.{i}"] for i, name in enumerate(masks)}
        return ModelCatalogue(self.movie_ids, mapped["in_catalogue"],
                              Titles(mapped["title_blob"], mapped["title_offsets"], mapped["in_catalogue"]),
                              mapped["years"], Genres(names, mapped["genre_flat"], mapped["genre_offsets"]), bits)

    def any_genre(self, wanted: frozenset[str], rows: np.ndarray) -> np.ndarray:
        """Whether each of ``rows`` has any of the ``wanted`` (lower-cased) genres, from the packed masks
        (for a slice of rows; :meth:`allowed_mask` unpacks them whole)."""
        hit = np.zeros(len(rows), dtype=bool)
        byte, shift = rows >> 3, 7 - (rows & 7)  # np.packbits: big bit order, row i in bit 7 - i % 8 of byte i // 8
        for name in wanted:
            bits = self.genre_bits.get(name)
            if bits is not None:
                hit |= ((bits[byte] >> shift) & 1).astype(bool)
        return hit

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


#: Seconds after which a shared catalogue file nobody has loaded is removed (see ModelCatalogue.shared).
SHARED_MAX_AGE_S = 3600.0


def shared_directory() -> Path | None:
    """This user's private directory for shared catalogue files (in the temporary directory), or
    None when it cannot be made safe (not ours, not private, a symlink)."""
    path = Path(tempfile.gettempdir()) / f"movierec-shared-{os.getuid()}"
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        return None
    return path


def _map_if_equal(path: Path, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    """The arrays of ``path``, mapped read-only, when they equal ``arrays``; else None."""
    try:
        mapped = map_tensors(path)
    except (MalformedTensorsError, OSError):
        return None
    if mapped.keys() != arrays.keys():
        return None
    for name, array in arrays.items():
        other = mapped[name]
        if other.dtype != array.dtype or other.shape != array.shape \
                or not np.array_equal(_bytes_of(other), _bytes_of(array)):  # bytes: NaN years compare equal
            return None
    return mapped


def _bytes_of(array: np.ndarray) -> np.ndarray:
    """The bytes of ``array`` as a flat uint8 array (no copy when it is contiguous)."""
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8)


def _prune(directory: Path, keep: Path) -> None:
    """Remove the shared catalogue files of ``directory`` older than SHARED_MAX_AGE_S, but ``keep``."""
    cutoff = time.time() - SHARED_MAX_AGE_S
    for path in directory.glob("catalogue-*.safetensors"):
        with contextlib.suppress(OSError):
            if path != keep and path.stat().st_mtime < cutoff:
                path.unlink()
