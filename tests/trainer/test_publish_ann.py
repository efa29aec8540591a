"""The trainer publishes a large catalogue with its ANN indexes, which the loader then verifies."""

from __future__ import annotations

from pathlib import Path

from movierec import ann_index
from movierec.store import ModelStore
from trainer.pipeline import train_and_publish


def test_a_large_catalogue_is_published_with_verified_indexes(tmp_path: Path, synth, fast_params) -> None:
    store = ModelStore(tmp_path / "models")
    train_and_publish(lambda: synth, store, fast_params, ann_min_movies=synth.n_movies)
    art = store.load()
    indexes = ann_index.load(art.path, art.manifest, art.version)  # raises if it does not match the weights
    assert indexes.recommend is not None and indexes.recommend.index.ntotal == synth.n_movies
    assert indexes.similar.index.ntotal == synth.n_movies
    # Below the threshold (the same data, one movie short of it): no index.
    train_and_publish(lambda: synth, store, fast_params, ann_min_movies=synth.n_movies + 1, force=True)
    assert not ann_index.present(store.load().path)

