"""The numpy block parser agrees with the line parser on every block it accepts, and declines the rest."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from movierec.data.fastparse import parse_block
from movierec.data.movielens import DataFormatError, read_ratings, split_lines

SEPARATORS = ["\t", ",", "::"]
digits = st.text(alphabet="0123456789", min_size=1, max_size=17)
# Rating-like fields: digits with at most one dot somewhere, and now and then something odd.
decimal = st.one_of(
    st.tuples(st.text(alphabet="0123456789", max_size=8), st.text(alphabet="0123456789", max_size=8))
    .map(lambda t: f"{t[0]}.{t[1]}"),
    digits,
    st.sampled_from(["4.5", ".5", "5.", "0003.50", ".", "4..5", "1e3", "-1", "4.5.", "nan", " 4", "+3"]),
)
odd = st.sampled_from(["", " ", "\r", "x", "é", "1.0", "-3", "1_0", ":", "\t", ","])


@st.composite
def block(draw: st.DrawFn) -> tuple[str, str]:
    sep = draw(st.sampled_from(SEPARATORS))
    width = draw(st.sampled_from([3, 4]))
    lines = []
    for _ in range(draw(st.integers(1, 12))):
        fields = [draw(digits), draw(digits), draw(decimal)] + ([draw(digits)] if width == 4 else [])
        if draw(st.integers(0, 9)) == 0:  # now and then a field is spoiled, dropped or added
            at = draw(st.integers(0, len(fields)))
            fields[at:at + draw(st.integers(0, 1))] = [draw(odd)]
        lines.append(sep.join(fields) + "\n")
    return sep, "".join(lines)


def reference(text: str, sep: str) -> list[np.ndarray] | None:
    """The line parser's numbers, or None where it refuses the text."""
    try:
        chunk = split_lines(Path("f"), io.StringIO(text, newline="").readlines(), 0, sep, 7)
    except DataFormatError:
        return None
    return [chunk.user_id, chunk.movie_id, chunk.rating, chunk.rated_at]


@settings(max_examples=400, deadline=None)
@given(case=block())
def test_fast_parse_matches_the_line_parser_or_declines(case: tuple[str, str]) -> None:
    sep, text = case
    parsed = parse_block(text.encode(), sep.encode(), 7)
    if parsed is None:
        return  # the line parser decides
    expected = reference(text, sep)
    assert expected is not None, "the fast path accepted what the line parser refuses"
    got = [parsed.user_id, parsed.movie_id, parsed.rating, parsed.rated_at]
    for mine, theirs in zip(got, expected, strict=True):
        assert mine.dtype == theirs.dtype
        np.testing.assert_array_equal(mine, theirs)


@pytest.mark.parametrize("text", ["1,2,4.5,100\n3,4,.5,1\n5,6,5.,2\n7,8,0003.50,9\n", "1,2,3\n",
                                  "123456789012345,2,1.5,999999999999999\n"])
def test_fast_path_takes_plain_blocks(text: str) -> None:
    """The fast path must really run on plain input, else the test above would pass vacuously."""
    parsed = parse_block(text.encode(), b",", 7)
    assert parsed is not None
    expected = reference(text, ",")
    assert expected is not None
    np.testing.assert_array_equal(parsed.rating, expected[2])
    np.testing.assert_array_equal(parsed.rated_at, expected[3])


@pytest.mark.parametrize("text", ["1,2,.,3\n", "1,2,4..5,3\n", "1.0,2,4,3\n", "1,2,4,3.0\n", "1,2,4\n1,2,4,5\n",
                                  "1,,4,3\n", "1,2,4,3\r\n", "1,2,4,3", "\n", "1,2,4,1234567890123456\n"])
def test_fast_path_declines_anything_unusual(text: str) -> None:
    assert parse_block(text.encode(), b",", 0) is None


def test_blocks_keep_line_numbers_across_fast_and_line_parsed_blocks(tmp_path: Path) -> None:
    """Tiny blocks force many boundaries; a blank line sends one block to the line parser."""
    path = tmp_path / "ratings.dat"
    good = [f"{u}::{u % 7 + 1}::{u % 10 / 2 + 0.5}::{1000 + u}" for u in range(1, 200)]
    path.write_text("\n".join(good[:50] + [""] + good[50:]) + "\n1::1::9::1")  # no final newline
    with pytest.raises(DataFormatError, match=r"ratings.dat:201: rating 9.0"):
        list(read_ratings(path, default_time=0, block_bytes=64))
    path.write_text("\n".join(good[:50] + [""] + good[50:]))
    chunks = list(read_ratings(path, default_time=0, block_bytes=64))
    lines = np.concatenate([c.line for c in chunks])
    np.testing.assert_array_equal(lines, list(range(1, 51)) + list(range(52, 201)))
    np.testing.assert_array_equal(np.concatenate([c.user_id for c in chunks]), range(1, 200))
