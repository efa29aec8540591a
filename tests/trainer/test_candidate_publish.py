"""`movierec train --candidate SHARE`: published beside CURRENT as the candidate, after the same gate."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from movierec.store import ModelStore
from trainer import GateRefusedError
from trainer.pipeline import train_and_publish


def test_a_candidate_is_published_without_touching_current(tmp_path: Path, synth, fast_params) -> None:
    store = ModelStore(tmp_path / "models")
    first = train_and_publish(lambda: synth, store, fast_params, candidate_share=0.2)
    assert store.current_version() == first.version == 1 and store.candidate() is None  # nothing else to serve
    second = train_and_publish(lambda: synth, store, fast_params, candidate_share=0.2)  # same recipe: passes the gate
    assert store.current_version() == 1 and (tmp_path / "models" / "CURRENT").read_text().strip() == "1"
    candidate = store.candidate()
    assert candidate is not None and candidate.version == second.version == 2 and candidate.share == 0.2


def test_the_gate_holds_for_a_candidate(tmp_path: Path, synth, fast_params) -> None:
    store = ModelStore(tmp_path / "models")
    train_and_publish(lambda: synth, store, fast_params)
    worse = dataclasses.replace(fast_params, epochs=1, lr=1e-4)
    with pytest.raises(GateRefusedError):
        train_and_publish(lambda: synth, store, worse, candidate_share=0.1)
    assert store.versions() == [1] and store.candidate() is None
