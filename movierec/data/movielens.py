"""Read MovieLens files in every layout GroupLens ships, validating each row.

* 100K: ``u.data`` (``user \\t item \\t rating \\t timestamp``) and ``u.item`` (pipe-separated, Latin-1).
* 1M/10M: ``ratings.dat`` (``user::movie::rating::timestamp``) and ``movies.dat`` (``id::title::genres``).
* ml-latest, ml-20m, ml-25m: ``ratings.csv`` and ``movies.csv`` with a header line.

Ratings are read in chunks of numpy arrays so a 25-million-row file never sits in memory as
Python objects. Any bad row raises :class:`DataFormatError` naming the file and line.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from movierec.db.schema import MAX_FUTURE_SKEW_S, MAX_RATING, MIN_RATING, latest_valid_timestamp

from .fastparse import parse_block
from .fetch import ML100K_GENRES

#: Bytes of whole lines parsed at a time (about 300,000 ratings of ml-25m's CSV).
BLOCK_BYTES = 8 << 20
MAX_ID = 2**31 - 1  # ids are INTEGER columns
_YEAR_IN_TITLE = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})(?:[-–]\d{0,4})?\)\s*$")
_NO_GENRES = {"", "unknown", "(no genres listed)"}


class DataFormatError(ValueError):
    """A MovieLens file is malformed; ``str()`` names the file and the line."""

    def __init__(self, path: Path, line: int | None, problem: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")
        self.path, self.line, self.problem = path, line, problem


@dataclass(frozen=True)
class MovieRow:
    """A movie as stored in the ``movies`` table."""

    id: int
    title: str
    year: int | None
    genres: str  # pipe-separated


@dataclass
class RatingChunk:
    """Consecutive validated ratings from one file, with the line number of each row."""

    user_id: np.ndarray  # int64
    movie_id: np.ndarray  # int64
    rating: np.ndarray  # float64, 0.5..5 in 0.5 steps
    rated_at: np.ndarray  # int64 epoch seconds
    line: np.ndarray  # int64, 1-based line of each row in its file

    def __len__(self) -> int:
        return len(self.user_id)


@dataclass(frozen=True)
class Layout:
    """Where the movies and ratings of a MovieLens directory are."""

    movies: Path
    ratings: Path


def detect_layout(directory: Path) -> Layout:
    """Find the movies and ratings files of a MovieLens directory, or say what is missing."""
    for movies, ratings in (("u.item", "u.data"), ("movies.csv", "ratings.csv"), ("movies.dat", "ratings.dat")):
        if (directory / movies).is_file() and (directory / ratings).is_file():
            return Layout(directory / movies, directory / ratings)
    if not directory.is_dir():
        raise DataFormatError(directory, None, "no such directory")
    raise DataFormatError(
        directory, None, "not a MovieLens directory: expected u.item + u.data, movies.csv + ratings.csv, "
        "or movies.dat + ratings.dat"
    )


def split_title(raw: str) -> tuple[str, int | None]:
    """``"Toy Story (1995)"`` -> ``("Toy Story", 1995)``; a title without a year keeps it None."""
    match = _YEAR_IN_TITLE.match(raw)
    if match:
        return match["title"].strip(), int(match["year"])
    return raw.strip(), None


def _genres(names: list[str]) -> str:
    return "|".join(name for name in names if name not in _NO_GENRES)


def _check_id(path: Path, line: int, text: str, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise DataFormatError(path, line, f"{what} {text!r} is not an integer") from None
    if not 0 < value <= MAX_ID:
        raise DataFormatError(path, line, f"{what} {value} is outside 1..{MAX_ID}")
    return value


def read_movies(path: Path) -> list[MovieRow]:
    """Read ``u.item``, ``movies.csv`` or ``movies.dat``; duplicate ids are an error."""
    rows: list[MovieRow] = []
    if path.name == "movies.csv":
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None or [h.strip() for h in header[:3]] != ["movieId", "title", "genres"]:
                raise DataFormatError(path, 1, "expected the header movieId,title,genres")
            for record in reader:
                line = reader.line_num
                if not record:
                    continue
                if len(record) != 3:
                    raise DataFormatError(path, line, f"expected 3 fields, found {len(record)}")
                title, year = split_title(record[1])
                rows.append(MovieRow(_check_id(path, line, record[0], "movie id"), title, year,
                                     _genres(record[2].split("|"))))
    else:
        encoding = "latin-1"  # GroupLens ships u.item and movies.dat in ISO-8859-1
        sep = "|" if path.name == "u.item" else "::"
        with path.open(encoding=encoding, newline="") as fh:
            for line, text in enumerate(fh, start=1):
                text = text.rstrip("\r\n")
                if not text:
                    continue
                fields = text.split(sep)
                if sep == "|":
                    if len(fields) != 5 + len(ML100K_GENRES):
                        raise DataFormatError(path, line, f"expected {5 + len(ML100K_GENRES)} fields, found {len(fields)}")
                    flags = fields[5:]
                    if any(flag not in ("0", "1") for flag in flags):
                        raise DataFormatError(path, line, "genre flags must be 0 or 1")
                    genres = _genres([g for g, flag in zip(ML100K_GENRES, flags) if flag == "1"])
                    title, year = split_title(fields[1])
                    if year is None and fields[2][-4:].isascii() and fields[2][-4:].isdigit():
                        year = int(fields[2][-4:])
                else:
                    if len(fields) != 3:
                        raise DataFormatError(path, line, f"expected 3 fields, found {len(fields)}")
                    genres = _genres(fields[2].split("|"))
                    title, year = split_title(fields[1])
                rows.append(MovieRow(_check_id(path, line, fields[0], "movie id"), title or "(untitled)", year, genres))
    seen: set[int] = set()
    for row in rows:
        if row.id in seen:
            raise DataFormatError(path, None, f"movie id {row.id} appears twice")
        seen.add(row.id)
        if len(row.title) > 512:
            raise DataFormatError(path, None, f"movie {row.id}: title longer than 512 characters")
    return rows


def _ratings_format(path: Path) -> tuple[str, bool]:
    """(separator, has_header) of a ratings file, from its first line."""
    with path.open("rb") as fh:
        first = fh.readline().decode("utf-8", errors="replace")
    if "::" in first:
        return "::", False
    if "\t" in first:
        return "\t", False
    if "," in first:
        head = first.split(",")[0].strip().lstrip("-")
        return ",", not (head.isascii() and head.isdigit())
    raise DataFormatError(path, 1, "not a ratings file: expected tab-, comma- or '::'-separated fields")


def read_ratings(path: Path, *, default_time: int, block_bytes: int | None = None,
                 on_bytes: Callable[[int], None] | None = None) -> Iterator[RatingChunk]:
    """Yield validated chunks of a ratings file in any MovieLens layout.

    A row is ``user, movie, rating[, timestamp]``; a missing timestamp becomes ``default_time``.
    The file is read in blocks of whole lines of about ``block_bytes`` (default
    :data:`BLOCK_BYTES`); a plain block is parsed
    with numpy (:mod:`.fastparse`), anything else line by line, with the same result and errors.
    ``on_bytes(n)`` is told how many bytes each chunk consumed, for a progress bar.
    """
    sep, header = _ratings_format(path)
    with path.open("rb") as fh:
        line = 0
        consumed = 0
        if header:
            head = fh.readline()
            line, consumed = 1, len(head)
            names = [h.strip() for h in head.decode("utf-8", errors="replace").strip().split(",")]
            if names[:3] != ["userId", "movieId", "rating"]:
                raise DataFormatError(path, 1, "expected the header userId,movieId,rating[,timestamp]")
        for block in _blocks(fh, block_bytes or BLOCK_BYTES):
            chunk, lines = _parse_block(path, block, consumed, line, sep, default_time)
            line += lines
            consumed += len(block)
            if on_bytes:
                on_bytes(len(block))
            if len(chunk):
                yield chunk


def _blocks(fh: BinaryIO, block_bytes: int) -> Iterator[bytes]:
    """Blocks of whole lines; the last line gets the newline it may lack."""
    rest = b""
    while True:
        data = fh.read(block_bytes)
        if not data:
            if rest:
                yield rest + b"\n"
            return
        data = rest + data
        cut = data.rfind(b"\n") + 1
        # A line longer than a block (or a file without "\n" at all) waits for the next read.
        block, rest = data[:cut], data[cut:]
        if block:
            yield block


def _parse_block(path: Path, block: bytes, at_byte: int, offset: int, sep: str,
                 default_time: int) -> tuple[RatingChunk, int]:
    """One block as a validated chunk, and how many lines it held."""
    columns = parse_block(block, sep.encode(), default_time)
    if columns is not None:
        n = len(columns.user_id)
        numbers = np.arange(offset + 1, offset + n + 1, dtype=np.int64)
        chunk = RatingChunk(columns.user_id, columns.movie_id, columns.rating, columns.rated_at, numbers)
        _validate(path, chunk)
        return chunk, n
    try:
        text = block.decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise DataFormatError(path, None, f"not UTF-8 text ({exc.reason} near byte {at_byte + exc.start})") from None
    # newline="" splits at \n, \r\n and a lone \r, as reading the file as text would.
    lines = io.StringIO(text, newline="").readlines()
    return _parse_lines(path, lines, offset, sep, default_time), len(lines)


def _parse_lines(path: Path, lines: list[str], offset: int, sep: str, default_time: int) -> RatingChunk:
    chunk = split_lines(path, lines, offset, sep, default_time)
    _validate(path, chunk)
    return chunk


def split_lines(path: Path, lines: list[str], offset: int, sep: str, default_time: int) -> RatingChunk:
    """Numbers of ratings lines, one Python line at a time; values are not range-checked yet.

    The reference for :func:`.fastparse.parse_block`, and the parser of any block it declines.
    """
    n = len(lines)
    users = np.empty(n, np.int64)
    movies = np.empty(n, np.int64)
    ratings = np.empty(n, np.float64)
    stamps = np.empty(n, np.int64)
    numbers = np.empty(n, np.int64)
    k = 0
    for i, text in enumerate(lines, start=offset + 1):
        text = text.strip()
        if not text:
            continue
        fields = text.split(sep)
        if len(fields) not in (3, 4):
            raise DataFormatError(path, i, f"expected 3 or 4 fields, found {len(fields)}")
        if not text.isascii() or "_" in text:
            # int() and float() also take "1_0" and non-ASCII digits; no MovieLens file has them.
            raise DataFormatError(path, i, f"not numbers: {text[:80]!r}")
        try:
            users[k] = int(fields[0])
            movies[k] = int(fields[1])
            ratings[k] = float(fields[2])
            stamps[k] = _timestamp(fields[3]) if len(fields) == 4 else default_time
        except ValueError:
            raise DataFormatError(path, i, f"not numbers: {text[:80]!r}") from None
        except OverflowError:
            raise DataFormatError(path, i, f"number out of range: {text[:80]!r}") from None
        numbers[k] = i
        k += 1
    return RatingChunk(users[:k], movies[:k], ratings[:k], stamps[:k], numbers[:k])


def _timestamp(text: str) -> int:
    # Some exports write "881250949.0"; int() first keeps large values exact.
    try:
        return int(text)
    except ValueError:
        return int(float(text))


def _validate(path: Path, chunk: RatingChunk) -> None:
    with np.errstate(over="ignore", invalid="ignore"):  # 1e308 * 2 is inf: refused all the same
        _check_ranges(path, chunk)


def _check_ranges(path: Path, chunk: RatingChunk) -> None:
    checks = (
        ((chunk.user_id <= 0) | (chunk.user_id > MAX_ID), "user id {value} is outside 1..%d" % MAX_ID, chunk.user_id),
        ((chunk.movie_id <= 0) | (chunk.movie_id > MAX_ID), "movie id {value} is outside 1..%d" % MAX_ID,
         chunk.movie_id),
        (~np.isfinite(chunk.rating) | (chunk.rating < MIN_RATING) | (chunk.rating > MAX_RATING)
         | (chunk.rating * 2 != np.round(chunk.rating * 2)),
         "rating {value} is not one of 0.5, 1.0, ..., 5.0", chunk.rating),
        # Later than now is a unit mix-up (milliseconds) or a forged date: it would stay the newest
        # rating for ever (the API refuses it the same way).
        ((chunk.rated_at < 0) | (chunk.rated_at > latest_valid_timestamp()),
         "timestamp {value} is negative or in the future (more than %d s after now)" % MAX_FUTURE_SKEW_S,
         chunk.rated_at),
    )
    # The earliest bad line is named, whichever check it fails.
    failures = [(int(np.argmax(bad)), message, values) for bad, message, values in checks if bad.any()]
    if failures:
        first, message, values = min(failures, key=lambda failure: failure[0])
        raise DataFormatError(path, int(chunk.line[first]), message.format(value=values[first].item()))

