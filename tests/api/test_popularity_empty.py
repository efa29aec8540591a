"""The popularity table taken before any rating exists (the API starts before the first import)."""

from __future__ import annotations

from pathlib import Path

from app.popularity import Popularity
from migrations import upgrade
from movierec.db.engine import make_engine, session_factory


def test_counts_before_any_rating_are_zero_not_an_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    upgrade(url)
    popularity = Popularity(session_factory(make_engine(url)))
    assert popularity.refresh().movie_ids.size == 0
    assert popularity.counts([1, 50, 7]) == [0, 0, 0]
    assert popularity.top(5) == []
