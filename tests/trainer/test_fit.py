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
                                 rank_weight=0.0)
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


def test_positive_weights_modes(synth) -> None:
    from trainer.fit import FitParams, positive_weights

    base = FitParams(rank_recency=0.0)
    assert np.all(positive_weights(synth, dataclasses.replace(base, rank_positives="all")) == 1)
    liked = positive_weights(synth, dataclasses.replace(base, rank_positives="liked"))
    assert np.all(liked[synth.rating < 4] == 0) and np.all(liked[synth.rating >= 4] > 0)
    assert liked.mean() == pytest.approx(1.0, rel=1e-5)
    with pytest.raises(ValueError, match="rank_positives"):
        positive_weights(synth, dataclasses.replace(base, rank_positives="nope"))


def test_recency_weights_grow_with_position_in_each_users_history(synth) -> None:
    from trainer.fit import FitParams, positive_weights

    c = positive_weights(synth, FitParams(rank_positives="all", rank_recency=1.0))
    assert c.mean() == pytest.approx(1.0, rel=1e-5)
    for user in range(5):
        rows = np.flatnonzero(synth.user == user)
        order = rows[np.lexsort((synth.movie[rows], synth.rated_at[rows]))]
        w = c[order]
        assert np.all(np.diff(w) > 0)  # oldest lowest, latest highest
        assert w[-1] / w[0] == pytest.approx(np.e, rel=1e-4)


def test_popularity_sampler_draws_popular_movies_more_with_logq_correction(synth) -> None:
    from trainer.fit import NegativeSampler

    uniform = NegativeSampler.for_ratings(synth, 0.0)
    assert uniform.log_correction is None
    pop = NegativeSampler.for_ratings(synth, 1.0)
    counts = np.bincount(synth.movie, minlength=synth.n_movies) + 1.0
    q = counts / counts.sum()
    np.testing.assert_allclose(pop.log_correction.numpy(), np.log(q * synth.n_movies), rtol=1e-4, atol=1e-5)
    draws = pop.draw(200, 128, torch.Generator().manual_seed(0)).numpy().ravel()
    seen = np.bincount(draws, minlength=synth.n_movies) / len(draws)
    assert np.corrcoef(seen, q)[0, 1] > 0.95


@pytest.mark.parametrize("positives", ["liked", "graded", "centered"])
def test_weighted_positive_modes_train_and_rank(synth, fast_params, positives) -> None:
    mask = latest_split(synth)
    train, test = synth.subset(~mask), synth.subset(mask)
    model, history = fit(train, dataclasses.replace(fast_params, rank_positives=positives))
    assert all(np.isfinite(history.rank)) and history.rank[-1] > 0
    pop = popularity_scores(train)
    base = ranking_metrics(train, test, lambda u: np.broadcast_to(pop, (len(u), len(pop))))["ndcg@10"]
    assert ranking_metrics(train, test, model.rank_scores)["ndcg@10"] > base


def test_fixed_rank_scale_is_kept_and_learned_scale_moves(synth, fast_params) -> None:
    fixed, _ = fit(synth, dataclasses.replace(fast_params, rank_scale=2.0, epochs=3))
    assert fixed.rank_scale == pytest.approx(2.0)
    learned, _ = fit(synth, dataclasses.replace(fast_params, rank_scale=0.0, epochs=3))
    assert learned.rank_scale != pytest.approx(1.0)
