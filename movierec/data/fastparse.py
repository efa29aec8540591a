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
    starts[0] = -1
    starts[1:] = ends[:-1]
    lengths = (ends - starts - 1).reshape(lines, width)
    ends = ends.reshape(lines, width)
    limits = (_MAX_DIGITS, _MAX_DIGITS, _MAX_RATING_CHARS, _MAX_DIGITS)
    if (lengths.min(axis=0) < 1).any() or any(lengths[:, c].max() > limits[c] for c in range(width)):
        return None
    # Each field right-aligned in a window of _WINDOW bytes ending at its delimiter.
    padded = np.concatenate([np.zeros(_WINDOW, dtype=np.uint8), buf])
    windows = np.lib.stride_tricks.sliding_window_view(padded, _WINDOW)
    columns = [_integers(windows[ends[:, c]], lengths[:, c]) for c in range(width) if c != 2]
    rating = _rating(windows[ends[:, 2]], lengths[:, 2], int(np.count_nonzero(buf == _DOT)))
    if rating is None:
        return None
    columns.insert(2, rating)
    stamps = columns[3] if width == 4 else np.full(lines, default_time, dtype=np.int64)
    return Columns(columns[0], columns[1], columns[2], stamps)


#: Bytes of the window a field is read through (two 8-byte words).
_WINDOW = 16
#: Longest id or timestamp field parsed here: 15 digits stay below 2**53 (exact in float64 too),
#: and hold every id up to the 2**31 - 1 limit that validation enforces; longer go to the line parser.
_MAX_DIGITS = 15
_POSITION = np.arange(_WINDOW)
_U64 = np.dtype("<u8")  # byte 0 of a window is the low byte of its first word, on any machine
_ZEROS = 0x3030303030303030  # eight ASCII "0"


def _word_masks() -> tuple[np.ndarray, np.ndarray]:
    """Per field length: the window bytes inside the field, and ASCII "0" for those outside."""
    inside = (_POSITION[None, :] >= _WINDOW - np.arange(_WINDOW + 1)[:, None]).astype(np.uint8) * 0xFF
    masks = np.ascontiguousarray(inside).view(_U64)  # (17, 2)
    return masks, np.uint64(_ZEROS) & ~masks


_INSIDE, _PAD = _word_masks()


def _eight_digits(word: np.ndarray) -> np.ndarray:
    """The value of eight ASCII digits packed in each uint64, most significant in the low byte.

    SWAR: pairs of digits, then fours, then all eight, in three multiply-and-shift steps
    (Lemire's parse_eight_digits_unrolled; uint64 arithmetic wraps exactly as it does in C).
    """
    word = word - np.uint64(_ZEROS)
    word = word * np.uint64(10) + (word >> np.uint64(8))
    mask = np.uint64(0x000000FF000000FF)
    word = ((word & mask) * np.uint64(100 + (1_000_000 << 32))
            + ((word >> np.uint64(16)) & mask) * np.uint64(1 + (10_000 << 32))) >> np.uint64(32)
    return word


def _integers(field: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The integers of digit fields: ``field`` holds each right-aligned in a 16-byte row."""
    words = np.ascontiguousarray(field).view(_U64)  # (n, 2)
    words = (words & _INSIDE[lengths]) | _PAD[lengths]  # bytes before the field read as leading zeros
    high = _eight_digits(words[:, 0])
    low = _eight_digits(words[:, 1])
    return (high * np.uint64(100_000_000) + low).astype(np.int64)


def _rating(field: np.ndarray, lengths: np.ndarray, dots_in_block: int) -> np.ndarray | None:
    """``float(text)`` of rating fields ``digits[.digits]``; None when a dot is anywhere else,
    two are in one field, or a field is just ".".

    The dot is read as a digit 0, which multiplies the digits before it by ten once too often;
    dividing them back out gives the integer of all the digits, and one correctly rounded
    division by 10**(digits after the dot) gives exactly what ``float()`` gives.
    """
    field = np.array(field)
    dot = (field == _DOT) & (_POSITION >= _WINDOW - lengths[:, None])
    dots = dot.sum(axis=1)
    if int(dots.sum()) != dots_in_block or (dots > 1).any() or ((dots == 1) & (lengths == 1)).any():
        return None
    if not dots_in_block:
        return _integers(field, lengths).astype(np.float64)
    field[dot] = ord("0")
    scaled = _integers(field, lengths)
    has_dot = dots == 1
    after = np.where(has_dot, _WINDOW - 1 - np.argmax(dot, axis=1), 0)
    tail = 10 ** after
    numerator = np.where(has_dot, scaled // (tail * 10) * tail + scaled % tail, scaled)
    return numerator / tail.astype(np.float64)
