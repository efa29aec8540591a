"""The candidate pointer of the model store: atomic, checked, kept by pruning, promoted or cleared."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from movierec.store import CANDIDATE_FILE, WEIGHTS_FILE, ModelStore, StoreError, user_fraction

from .test_store import make_model


def _store(tmp_path: Path, versions: int = 3) -> ModelStore:
    store = ModelStore(tmp_path)
    for seed in range(versions):
        store.publish(*make_model(seed=seed))
    store.set_current(1)
    return store


def test_set_read_clear(tmp_path: Path) -> None:
    store = _store(tmp_path)
    assert store.candidate() is None
    candidate = store.set_candidate(2, 0.25)
    assert store.candidate() == candidate and candidate.share == 0.25 and len(candidate.salt) == 16
    assert json.loads((tmp_path / CANDIDATE_FILE).read_text())["version"] == 2
    assert store.set_candidate(2, 0.5).salt == candidate.salt  # a bigger share keeps the first users
    assert store.set_candidate(3, 0.5).salt != candidate.salt
    assert store.clear_candidate() is not None and store.candidate() is None
    assert store.clear_candidate() is None
    assert not list(tmp_path.glob(".tmp-*"))


def test_refuses_bad_candidates(tmp_path: Path) -> None:
    store = _store(tmp_path)
    with pytest.raises(StoreError):
        store.set_candidate(1, 0.1)  # already current
    with pytest.raises(StoreError):
        store.set_candidate(9, 0.1)  # no such version
    with pytest.raises(StoreError):
        store.set_candidate(2, 1.5)
    weights = tmp_path / "3" / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:50])
    with pytest.raises(StoreError):
        store.set_candidate(3, 0.1)  # damaged
    assert store.candidate() is None


def test_unreadable_or_stale_pointer_means_no_candidate(tmp_path: Path) -> None:
    store = _store(tmp_path)
    (tmp_path / CANDIDATE_FILE).write_text("{not json")
    assert store.candidate() is None
    (tmp_path / CANDIDATE_FILE).write_text(json.dumps({"version": 7, "share": 0.1, "salt": "x"}))
    assert store.candidate() is None


def test_a_candidate_made_current_otherwise_is_no_candidate(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.set_candidate(2, 0.1)
    store.set_current(2)
    assert store.candidate() is None
    store.set_current(1)
    assert store.candidate() is not None  # the pointer is still there and names another version again


def test_promote_makes_it_current_and_clears_it(tmp_path: Path) -> None:
    store = _store(tmp_path)
    with pytest.raises(StoreError):
        store.promote()
    store.set_candidate(2, 0.1)
    assert store.promote() == 2
    assert store.current_version() == 2 and store.candidate() is None


def test_pruning_keeps_the_candidate(tmp_path: Path) -> None:
    store = _store(tmp_path, versions=4)
    store.set_current(4)
    store.set_candidate(1, 0.1)
    store.prune(1)
    assert store.versions() == [1, 4]


def test_the_split_is_stable_and_close_to_the_share(tmp_path: Path) -> None:
    store = _store(tmp_path)
    candidate = store.set_candidate(2, 0.1, salt="fixed")
    chosen = [u for u in range(1, 20_001) if candidate.serves(u)]
    assert 0.09 < len(chosen) / 20_000 < 0.11
    assert chosen == [u for u in range(1, 20_001) if user_fraction("fixed", u) < 0.1]  # same in any process
    bigger = store.set_candidate(2, 0.3)
    assert set(chosen) <= {u for u in range(1, 20_001) if bigger.serves(u)}
