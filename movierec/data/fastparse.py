"""Vectorised parsing of a block of ratings lines, for the common, clean case only.

A block of MovieLens ratings is almost always plain ``digits SEP digits SEP digits[.digits]
[SEP digits]`` lines. :func:`parse_block` parses exactly that grammar with numpy (no Python
object per row), several times faster than splitting lines in Python. Anything else -- a blank
line, ``\\r``, spaces, a sign, an exponent, a non-ASCII byte, mixed field counts, a field too
long to be exact -- makes it return None, and the caller parses the block with the line-by-line
parser, which accepts or rejects it with the precise message. So the fast path never changes
what is accepted: every block it parses, the line parser would have parsed to the same numbers
(values are checked afterwards by the same validation either way).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_NEWLINE = 10
_DOT = 46
#: Longest id field parsed here: 10 digits hold every id up to the 2**31 - 1 limit; longer ones
#: go to the line parser, which names them.
_MAX_ID_DIGITS = 10
#: Longest timestamp field: 18 digits stay exact in int64.
_MAX_TIME_DIGITS = 18
#: Longest rating field: 15 digits keep the numerator below 2**53, so ``n / 10**f`` is exactly
#: the correctly rounded value ``float(text)`` gives.
_MAX_RATING_CHARS = 15


@dataclass
class Columns:
    """Parsed columns of one block, one entry per line, in file order."""

    user_id: np.ndarray  # int64
    movie_id: np.ndarray  # int64
    rating: np.ndarray  # float64
    rated_at: np.ndarray  # int64, ``default_time`` where the line has three fields


def _allowed(sep: int) -> np.ndarray:
    table = np.zeros(256, dtype=bool)
    table[ord("0"):ord("9") + 1] = True
    table[[sep, _NEWLINE, _DOT]] = True
    return table


_ALLOWED = {sep: _allowed(sep) for sep in (ord("\t"), ord(","))}


def parse_block(data: bytes, sep: bytes, default_time: int) -> Columns | None:
    """Parse ``data`` (whole lines, each ending in ``\\n``) or return None when it is not plain.

    ``sep`` is the file's separator: ``b"\\t"``, ``b","`` or ``b"::"``.
    """
    if not data:
        return None
    if sep == b"::":
        # "1\t2::3::4" must stay an error: only rewrite "::" when there is no tab to confuse it with.
        if b"\t" in data:
            return None
        data, sep = data.replace(b"::", b"\t"), b"\t"
    code = sep[0]
    buf = np.frombuffer(data, dtype=np.uint8)
    if buf[-1] != _NEWLINE or not _ALLOWED[code][buf].all():
        return None
    ends = np.flatnonzero((buf == code) | (buf == _NEWLINE))
    is_newline = buf[ends] == _NEWLINE
    lines = int(np.count_nonzero(is_newline))
    width = len(ends) // lines
    # Exactly `width` fields on every line: every width-th delimiter, and only those, ends a line.
    if width not in (3, 4) or width * lines != len(ends) or not is_newline[width - 1::width].all():
        return None
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lengths = (ends - starts).reshape(lines, width)
    ends = ends.reshape(lines, width)
    if not (lengths > 0).all():
        return None
    dots = np.flatnonzero(buf == _DOT)
    dot_fields = np.searchsorted(ends.ravel(), dots)
    # A dot only in the rating (third) field, at most one there, and never the field's only byte.
    if dots.size and ((dot_fields % width != 2).any() or (np.diff(dot_fields) == 0).any()
                      or (lengths[:, 2][dot_fields // width] == 1).any()):
        return None
    limits = (_MAX_ID_DIGITS, _MAX_ID_DIGITS, _MAX_RATING_CHARS, _MAX_TIME_DIGITS)
    for column in range(width):
        if lengths[:, column].max() > limits[column]:
            return None
    users = _integers(buf, ends[:, 0], lengths[:, 0])
    movies = _integers(buf, ends[:, 1], lengths[:, 1])
    stamps = (_integers(buf, ends[:, 3], lengths[:, 3]) if width == 4
              else np.full(lines, default_time, dtype=np.int64))
    ratings = _decimals(buf, ends[:, 2], lengths[:, 2], dots, dot_fields // width)
    return Columns(users, movies, ratings, stamps)


def _integers(buf: np.ndarray, ends: np.ndarray, lengths: np.ndarray, skip_dots: bool = False) -> np.ndarray:
    """The decimal value of the digits before each ``ends[i]`` (``lengths[i]`` bytes of them)."""
    value = np.zeros(len(ends), dtype=np.int64)
    for back in range(int(lengths.max()), 0, -1):
        digit = buf[np.maximum(ends - back, 0)].astype(np.int64) - ord("0")
        # Bytes before the field count as leading zeros; a dot (rating fields) is skipped.
        keep = lengths >= back
        if skip_dots:
            keep &= digit >= 0
            value = np.where(keep, value * 10 + digit, value)
        else:
            value = value * 10 + np.where(keep, digit, 0)
    return value


def _decimals(buf: np.ndarray, ends: np.ndarray, lengths: np.ndarray, dots: np.ndarray,
              dot_rows: np.ndarray) -> np.ndarray:
    """``float(text)`` of fields ``digits[.digits]``: all digits as one integer over 10**(digits after the dot)."""
    if dots.size == 0:
        return _integers(buf, ends, lengths).astype(np.float64)
    numerator = _integers(buf, ends, lengths, skip_dots=True)
    fraction = np.zeros(len(ends), dtype=np.int64)
    fraction[dot_rows] = ends[dot_rows] - dots - 1
    return numerator / 10.0 ** fraction
