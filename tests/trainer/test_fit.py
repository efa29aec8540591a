"""Training: learns planted structure, beats baselines, is deterministic, stops on NaN."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from trainer import DivergedError
from trainer.fit import fit, one_cycle
from trainer.metrics import BiasBaseline, popularity_scores, ranking_metrics, rmse
from trainer.split import latest_split, random_split


def test_dot_beats_bias_baseline_on_planted_low_rank(synth, fast_params) -> None:
    mask = random_split(synth)
    train, test = synth.subset(~mask), synth.subset(mask)
    model, history = fit(train, fast_params, valid=test)
    ours = rmse(model.predict(test.user, test.movie), test.rating)
    base = rmse(BiasBaseline().fit(train).predict(test.user, test.movie), test.rating)
    assert ours < 0.9 * base
    assert len(history.loss) == fast_params.epochs == len(history.valid_rmse)
    assert history.loss[-1] < history.loss[0]


def test_dot_ranks_better_than_popularity_on_planted_data(synth, fast_params) -> None:
    mask = latest_split(synth)
    train, test = synth.subset(~mask), synth.subset(mask)
    model, _ = fit(train, fast_params)
    ours = ranking_metrics(train, test, model.rank_scores)["ndcg@10"]
    pop = popularity_scores(train)
    base = ranking_metrics(train, test, lambda u: np.broadcast_to(pop, (len(u), len(pop))))["ndcg@10"]
    assert ours > base


@pytest.mark.parametrize("kind", ["dot", "nn"])
def test_same_seed_same_tensors(synth, fast_params, kind) -> None:
    params = dataclasses.replace(fast_params, model=kind, epochs=3)
    a, _ = fit(synth, params)
    b, _ = fit(synth, params)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    c, _ = fit(synth, dataclasses.replace(params, seed=params.seed + 1))
    assert not torch.equal(a.user_factors, c.user_factors)


def test_nn_beats_bias_baseline(synth, fast_params) -> None:
    params = dataclasses.replace(fast_params, model="nn", factors=8, hidden=(32,), epochs=30, lr=0.03, wd=0.1,
                                 bpr_weight=0.0)
    mask = random_split(synth)
    train, test = synth.subset(~mask), synth.subset(mask)
    model, _ = fit(train, params)
    ours = rmse(model.predict(test.user, test.movie), test.rating)
    base = rmse(BiasBaseline().fit(train).predict(test.user, test.movie), test.rating)
    assert ours < base


@pytest.mark.parametrize("kind", ["dot", "nn"])
def test_nan_loss_stops_training(synth, fast_params, kind) -> None:
    bad = synth.subset(np.arange(len(synth)))
    bad.rating = bad.rating.copy()
    bad.rating[5] = np.nan  # bypasses from_raw's validation on purpose: the loop itself must notice
    with pytest.raises(DivergedError, match="diverged"):
        fit(bad, dataclasses.replace(fast_params, model=kind, epochs=2))


def test_one_cycle_shape() -> None:
    lrs = [one_cycle(t, 100, 1.0) for t in range(100)]
    assert lrs[0] == pytest.approx(1 / 25)
    assert max(lrs) == pytest.approx(1.0, rel=1e-2)
    assert lrs[-1] == pytest.approx(1e-4)
