"""An ensemble of dot fits is one dot model whose logits and ranking scores are its members' means."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from trainer.fit import Engine, fit
from trainer.fit.ensemble import member_params
from trainer.models import store_tensors


def _all_pairs(n_users: int, n_movies: int) -> tuple[torch.Tensor, torch.Tensor]:
    u = np.repeat(np.arange(n_users), n_movies)
    m = np.tile(np.arange(n_movies), n_users)
    return torch.from_numpy(u), torch.from_numpy(m)


@pytest.mark.parametrize("engine", [None, Engine("torch", "cpu")], ids=["numba", "torch"])
def test_ensemble_is_the_mean_of_its_members(synth, fast_params, engine) -> None:
    params = dataclasses.replace(fast_params, epochs=3, ensemble=3)
    ensemble, history = fit(synth, params, engine=engine)
    members = [fit(synth, member_params(params, i), engine=engine)[0] for i in range(3)]
    assert ensemble.factors == 3 * fast_params.factors
    assert history.members == 3 and len(history.loss) == 3
    u, m = _all_pairs(synth.n_users, synth.n_movies)
    with torch.no_grad():
        mean_logit = torch.stack([x.logit(u, m) for x in members]).mean(0)
        torch.testing.assert_close(ensemble.logit(u, m), mean_logit, atol=1e-5, rtol=1e-5)
    users = np.arange(synth.n_users)
    np.testing.assert_allclose(ensemble.rank_scores(users), np.mean([x.rank_scores(users) for x in members], 0),
                               atol=1e-5, rtol=1e-5)
    # the exported tensors are an ordinary dot model's, rank scale folded in
    tensors = store_tensors(ensemble, synth.user_ids, synth.movie_ids)
    assert tensors["user_factors"].shape == (synth.n_users, 3 * fast_params.factors)
    assert ensemble.rank_scale == 1.0


def test_first_member_is_the_single_fit_and_progress_counts_every_epoch(synth, fast_params) -> None:
    params = dataclasses.replace(fast_params, epochs=2)
    single, _ = fit(synth, params)
    seen: list[tuple[int, int]] = []
    ensemble, _ = fit(synth, dataclasses.replace(params, ensemble=2),
                      progress=lambda e, n, _loss, _v: seen.append((e, n)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    torch.testing.assert_close(ensemble.user_factors[:, : params.factors], single.user_factors / np.sqrt(2))


def test_ensemble_of_nn_is_refused(synth, fast_params) -> None:
    with pytest.raises(ValueError, match="dot"):
        fit(synth, dataclasses.replace(fast_params, model="nn", ensemble=2))
