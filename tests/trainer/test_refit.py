"""The rating-only refit after an ensemble's members are combined (trainer.fit.refit)."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import torch

from trainer.fit import combine, fit, truncate
from trainer.fit.ensemble import member_params
from trainer.fit.refit import refit_rating


def _mse(model, data) -> float:
    pred = model.predict(data.user, data.movie)
    return float(np.mean((pred - data.rating) ** 2))


def _distance(a, b) -> float:
    return sum(float((getattr(a, n) - getattr(b, n)).detach().abs().max())
               for n in ("user_factors", "movie_factors", "user_bias", "movie_bias"))


def test_refit_lowers_the_training_mse_and_stays_near_the_model_as_l2_grows(synth, fast_params) -> None:
    model, _ = fit(synth, dataclasses.replace(fast_params, rank_weight=2.0, epochs=4))
    before = _mse(model, synth)
    near = refit_rating(copy.deepcopy(model), synth, l2=100.0)
    far = refit_rating(copy.deepcopy(model), synth, l2=1.0)
    assert _mse(far, synth) < _mse(near, synth) < before
    assert 0 < _distance(near, model) < _distance(far, model)
    torch.testing.assert_close(near.rank_bias, model.rank_bias)  # the ranking bias is not the rating's
    same = refit_rating(copy.deepcopy(model), synth, l2=0.0)
    assert _distance(same, model) == 0


def test_an_ensemble_with_refit_l2_publishes_the_refitted_combination(synth, fast_params) -> None:
    params = dataclasses.replace(fast_params, epochs=2, ensemble=2, refit_l2=30.0, refit_sweeps=1)
    model, _ = fit(synth, params)
    members = [fit(synth, member_params(params, i))[0] for i in range(2)]
    expected = refit_rating(truncate(combine(members), params.factors), synth, 30.0, sweeps=1)
    for name in ("user_factors", "movie_factors", "user_bias", "movie_bias", "rank_bias"):
        torch.testing.assert_close(getattr(model, name), getattr(expected, name))
    plain, _ = fit(synth, dataclasses.replace(params, refit_l2=0.0))
    assert _distance(plain, model) > 0
