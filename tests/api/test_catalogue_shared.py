"""The catalogue shared between a server's workers: one content-named file, mapped read-only."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.catalogue import Catalogue, ModelCatalogue

ROWS = [(i, f"Film {i} – é{'x' * (i % 7)}", None if i % 5 == 0 else 1900 + i, "|".join(["Drama", "comedy", "Comedy",
        "Ünï"][: i % 4])) for i in range(1, 400) if i % 9]


def _same(a: ModelCatalogue, b: ModelCatalogue) -> None:
    m = len(a.movie_ids)
    assert [a.titles[r] for r in range(m)] == [b.titles[r] for r in range(m)]
    rows = np.arange(m)[::-1]  # many() (what explanations use) reads the same titles from either blob
    assert a.titles.many(rows) == b.titles.many(rows) == [a.titles[r] for r in rows.tolist()]
    assert [a.genres[r] for r in range(m)] == [b.genres[r] for r in range(m)]
    assert [a.year(r) for r in range(m)] == [b.year(r) for r in range(m)]
    for genre, year in ((None, None), ("comedy", None), ("ünï|DRAMA", 2000), (None, 2100), ("nothing", None)):
        np.testing.assert_array_equal(a.allowed_mask(genre, year), b.allowed_mask(genre, year))


def test_workers_building_the_same_catalogue_map_one_file(tmp_path: Path) -> None:
    movie_ids = np.arange(1, 420, dtype=np.int64)  # some model rows are not in the database
    built = Catalogue.from_rows(ROWS).aligned_to(movie_ids)
    first = built.shared(tmp_path)
    second = Catalogue.from_rows(list(reversed(ROWS))).aligned_to(movie_ids).shared(tmp_path)  # another worker
    files = list(tmp_path.glob("catalogue-*.safetensors"))
    assert len(files) == 1
    _same(built, first)
    _same(built, second)
    assert not first.years.flags.writeable and not second.in_catalogue.flags.writeable
    maps = Path("/proc/self/maps")
    if maps.exists():
        assert str(files[0]) in maps.read_text()
    other = Catalogue.from_rows(ROWS[:-1]).aligned_to(movie_ids).shared(tmp_path)  # another database: another file
    assert len(list(tmp_path.glob("catalogue-*.safetensors"))) == 2
    _same(Catalogue.from_rows(ROWS[:-1]).aligned_to(movie_ids), other)


def test_a_damaged_shared_file_is_written_again_never_used(tmp_path: Path) -> None:
    movie_ids = np.arange(1, 420, dtype=np.int64)
    built = Catalogue.from_rows(ROWS).aligned_to(movie_ids)
    built.shared(tmp_path)
    (path,) = tmp_path.glob("catalogue-*.safetensors")
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # a title byte
    path.write_bytes(bytes(data))
    _same(built, built.shared(tmp_path))
    path.write_bytes(b"not a safetensors file")
    _same(built, built.shared(tmp_path))


def test_an_empty_catalogue_shares_too(tmp_path: Path) -> None:
    empty = Catalogue.empty().aligned_to(np.zeros(0, dtype=np.int64))
    shared = empty.shared(tmp_path)
    assert len(shared.titles) == 0 and shared.allowed_mask("drama", 1990).size == 0
