"""The compiled training step: its gradients against torch autograd, thread-count independence, huge pages."""

from __future__ import annotations

import dataclasses
import math

import numba
import numpy as np
import pytest
import torch

from trainer import hugepages
from trainer import kernels as K
from trainer.fit import FitParams, NegativeSampler, Ranking, fit, make_model, rank_fraction
from trainer.fit.dot import DotBatch
from trainer.fit.optim import ScalarAdam

B1 = 0.9  # the first Adam moment after one step is (1 - B1) * gradient


def _reference_loss(model, u, m, y, j, c, params: FitParams, log_q, rows_ranked: int, a: float) -> torch.Tensor:
    """The documented loss of one batch, written plainly for autograd."""
    lo, hi = model.y_range
    b = len(u)
    uf, mf = model.user_factors, model.movie_factors
    pu, pm = uf[u], mf[m]
    z = (pu * pm).sum(1) + model.user_bias[u] + model.movie_bias[m] + model.global_bias
    pred = lo + (hi - lo) * torch.sigmoid(z)
    loss = ((pred - y) ** 2).sum() / b
    loss = loss + params.wd * ((pu ** 2).sum() + (pm ** 2).sum()) / b
    w = params.rank_weight
    if params.rank_loss == "softmax":
        r = rows_ranked
        qu, qm, mm = pu[:r], pm[:r], m[:r]
        x_pos = a * (qu * qm).sum(1) + model.rank_bias[mm]
        x_neg = a * qu @ mf[j].t() + model.rank_bias[j] - log_q[j]
        x_neg = x_neg.masked_fill(j.unsqueeze(0) == mm.unsqueeze(1), float("-inf"))
        per_row = torch.logsumexp(torch.cat([x_pos.unsqueeze(1), x_neg], 1), 1) - x_pos
        loss = loss + w / r * (c[:r] * per_row).sum()
    else:
        pj = mf[j]
        x = (pu * (pm - pj)).sum(1) + model.rank_bias[m] - model.rank_bias[j]
        loss = loss + w / b * torch.nn.functional.softplus(-x).sum() + params.wd * (pj ** 2).sum() / b
    return loss


@pytest.mark.parametrize("rank_loss,fraction", [("softmax", 1.0), ("softmax", 0.5), ("bpr", 1.0)])
def test_step_gradients_match_autograd(synth, rank_loss, fraction) -> None:
    params = FitParams(factors=4, batch_size=16, rank_loss=rank_loss, negatives=8, wd=0.05, rank_weight=0.7)
    gen = torch.Generator().manual_seed(3)
    model = make_model(params, 12, 10, 3.4, gen)
    with torch.no_grad():  # non-trivial starting point: biases and larger factors
        for p in (model.user_factors, model.movie_factors):
            p.mul_(40)
        for p in (model.user_bias, model.movie_bias, model.rank_bias):
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    u = np.array([0, 1, 2, 2, 3, 4, 5, 5, 5, 6, 7, 8, 9, 10, 11, 0], np.int32)  # repeated users and movies
    m = np.array([0, 1, 1, 2, 3, 3, 4, 5, 6, 7, 7, 7, 8, 0, 2, 9], np.int32)
    y = np.array([4, 3, 5, 1, 2, 4.5, 3.5, 5, 2, 1, 3, 4, 5, 2.5, 3, 4], np.float32)
    c = np.linspace(0.2, 1.8, 16).astype(np.float32)
    c[3] = 0.0  # a rating that takes no part in the ranking term
    if rank_loss == "softmax":
        j = np.array([1, 3, 3, 9, 8, 0, 5, 7], np.int32)  # duplicates, and hits of several positives
        q = np.linspace(0.5, 2.0, 10, dtype=np.float32)
        sampler = NegativeSampler(10, torch.from_numpy(q / q.sum()))
        log_q = sampler.log_correction_np
        ranking = Ranking("softmax", params.rank_weight, sampler, params.negatives, fraction=fraction)
    else:
        j = np.array([9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 9, 8, 7, 6, 5, 4], np.int32)
        log_q = np.zeros(10, np.float32)
        ranking = Ranking("bpr", params.rank_weight, NegativeSampler(10), 1)
    ref = make_model(params, 12, 10, 3.4, torch.Generator())
    ref.load_state_dict(model.state_dict())
    ref.global_bias = model.global_bias
    t = lambda a: torch.from_numpy(a).long()  # noqa: E731
    rows_ranked = max(1, round(fraction * 16))
    a = 2.0
    loss = _reference_loss(ref, t(u), t(m), torch.from_numpy(y), t(j), torch.from_numpy(c), params,
                           torch.from_numpy(log_q), rows_ranked, a)
    loss.backward()

    step = DotBatch(model, params, ranking)
    step(u, m, y, j, c if rank_loss == "softmax" else None, 0.01, 1, ScalarAdam(math.log(a), learn=False))
    k = params.factors
    got_users = step.opt_users.m1 / (1 - B1)
    got_movies = step.opt_movies.m1 / (1 - B1)
    np.testing.assert_allclose(got_users[:, :k], ref.user_factors.grad.numpy(), rtol=2e-4, atol=1e-6)
    np.testing.assert_allclose(got_users[:, k], ref.user_bias.grad.numpy(), rtol=2e-4, atol=1e-6)
    np.testing.assert_allclose(got_movies[:, :k], ref.movie_factors.grad.numpy(), rtol=2e-4, atol=1e-6)
    np.testing.assert_allclose(got_movies[:, k], ref.rank_bias.grad.numpy(), rtol=2e-4, atol=1e-6)
    np.testing.assert_allclose(got_movies[:, k + 1], ref.movie_bias.grad.numpy(), rtol=2e-4, atol=1e-6)
    assert np.abs(ref.rank_bias.grad.numpy()).max() > 1e-3  # the ranking term did contribute
    # Lazy Adam: rows the batch did not touch keep their weights.
    untouched_movies = np.setdiff1d(np.arange(10), np.concatenate([m, j]))
    step.release()
    for row in untouched_movies:
        assert torch.equal(model.movie_factors[row], ref.movie_factors.detach()[row])


def test_movie_bias_moves_only_for_positives(synth) -> None:
    """A movie drawn only as a negative keeps its rating bias (its factors and rank bias move)."""
    params = FitParams(factors=4, batch_size=4, negatives=3, rank_weight=1.0)
    model = make_model(params, 4, 6, 3.5, torch.Generator().manual_seed(0))
    before = model.movie_bias.detach().clone(), model.movie_factors.detach().clone()
    step = DotBatch(model, params, Ranking("softmax", 1.0, NegativeSampler(6), 3))
    u, m = np.arange(4, dtype=np.int32), np.array([0, 1, 2, 0], np.int32)
    step(u, m, np.array([5, 1, 4, 2], np.float32), np.array([4, 5, 4], np.int32), None, 0.01, 1,
         ScalarAdam(math.log(2.0), learn=False))
    step.release()
    assert torch.equal(model.movie_bias[3:], before[0][3:])
    assert not torch.equal(model.movie_bias[:3], before[0][:3])
    assert not torch.equal(model.movie_factors[4], before[1][4])  # negative: factors moved


def test_rank_fraction_keeps_small_data_whole() -> None:
    params = FitParams(rank_sample=0.25, rank_sample_min=1_000_000)
    assert rank_fraction(params, 90_000) == 1.0
    assert rank_fraction(params, 2_000_000) == 0.5
    assert rank_fraction(params, 25_000_000) == 0.25
    assert rank_fraction(dataclasses.replace(params, rank_sample=1.0), 25_000_000) == 1.0


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 numba threads")
def test_same_model_whatever_the_thread_count(synth, fast_params, monkeypatch) -> None:
    """Gradient sums are per-row and in batch order, so 1 and 2 threads give the same numbers.

    The ranking term is off: its matrix products are BLAS calls, whose summation order may
    depend on the thread count.
    """
    params = dataclasses.replace(fast_params, epochs=2, rank_weight=0.0)
    monkeypatch.setenv("MOVIEREC_TRAIN_THREADS", "1")
    one, _ = fit(synth, params)
    monkeypatch.setenv("MOVIEREC_TRAIN_THREADS", "2")
    two, history = fit(synth, params)
    assert history.threads == 2
    for (name, x), (_, y) in zip(one.state_dict().items(), two.state_dict().items(), strict=True):
        assert torch.equal(x, y), name


def test_fit_returns_contiguous_tensors_of_its_own(synth, fast_params) -> None:
    model, _ = fit(synth, dataclasses.replace(fast_params, epochs=1))
    for name, p in model.state_dict().items():
        assert p.is_contiguous(), name


def test_hugepage_arrays_are_zeroed_and_aligned() -> None:
    small = hugepages.zeros((10, 3))
    assert small.shape == (10, 3) and not small.any()
    big = hugepages.zeros((1 << 20, 3), np.float32)  # 12 MiB
    assert big.flags.c_contiguous and big.flags.writeable and not big.any()
    if hasattr(__import__("mmap"), "MADV_HUGEPAGE"):
        assert big.ctypes.data % hugepages.HUGE_PAGE == 0
    copy = hugepages.like(np.arange(12, dtype=np.int32).reshape(4, 3))
    assert copy.dtype == np.int32 and copy[3, 2] == 11


@pytest.mark.parametrize("seed", [0, 1])
def test_history_positions_follow_lexsort_order(seed: int) -> None:
    """Positions in each user's history by (time, movie), ties in input order, as np.lexsort gives them."""
    from trainer.kernels import history_positions

    rng = np.random.default_rng(seed)
    n, users = 5000, 40
    user = rng.integers(0, users, n).astype(np.int32)
    user[:3] = users - 1  # a user at the end of the range; some users may have no ratings at all
    rated_at = rng.integers(0, 30, n)  # many equal timestamps
    movie = rng.integers(0, 50, n).astype(np.int32)
    order = np.lexsort((movie, rated_at, user))
    counts = np.bincount(user, minlength=users)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    expected = np.empty(n, np.int64)
    expected[order] = np.arange(n) - np.repeat(starts, counts)
    np.testing.assert_array_equal(history_positions(user, rated_at, movie, users), expected)


class _Clock:
    """A fake clock that also numbers the steps of the fit."""

    def __init__(self) -> None:
        self.now = 0.0
        self.steps = 0

    def __call__(self) -> float:
        return self.now


def _run_windows(governor, clock: _Clock, seconds_per_step: list[float], window: int) -> None:
    for per_step in seconds_per_step:
        for _ in range(window):
            clock.steps += 1
            clock.now += per_step
            governor.step(clock.steps)


def test_thread_governor_drops_to_one_thread_when_the_rate_collapses(monkeypatch) -> None:
    from trainer.fit import threads as F

    calls = []
    monkeypatch.setattr(F.torch, "set_num_threads", lambda n: calls.append(("torch", n)))
    monkeypatch.setattr(F.numba, "set_num_threads", lambda n: calls.append(("numba", n)))
    clock = _Clock()
    governor = F.ThreadGovernor(2, window=4, collapse=3.0, clock=clock)
    _run_windows(governor, clock, [0.010, 0.008, 0.012, 0.020], 4)  # slower, but not 3x: keeps 2
    assert governor.threads == 2 and governor.dropped_at is None and not calls
    _run_windows(governor, clock, [0.030], 4)  # 3.75x the best window: busy machine
    assert governor.threads == 1 and governor.dropped_at == 20
    assert calls == [("torch", 1), ("numba", 1)]
    _run_windows(governor, clock, [0.001, 0.100], 4)  # never back, never again
    assert governor.threads == 1 and len(calls) == 2


def test_thread_governor_leaves_one_thread_and_short_epochs_alone() -> None:
    from trainer.fit import ThreadGovernor

    clock = _Clock()
    one = ThreadGovernor(1, window=4, clock=clock)
    _run_windows(one, clock, [0.01, 1.0], 4)
    assert one.threads == 1 and one.dropped_at is None
    short = ThreadGovernor(2, window=4, clock=clock)
    for t in range(1, 4):  # each epoch shorter than a window: nothing is judged
        short.restart()
        clock.now += 100.0
        short.step(t)
    assert short.threads == 2 and short.best == 0.0


@pytest.mark.parametrize("n", [1, 7, 1000, 3 * K.PERMUTATION_BUCKET + 5])
def test_random_permutation_is_a_permutation_fixed_by_its_seed(n) -> None:
    a, b, c = (np.empty(n, np.int64) for _ in range(3))
    K.random_permutation(11, a)
    K.random_permutation(11, b)
    K.random_permutation(12, c)
    assert np.array_equal(np.sort(a), np.arange(n))
    assert np.array_equal(a, b)
    if n > 7:
        assert not np.array_equal(a, c) and not np.array_equal(a, np.arange(n))


def test_random_permutation_is_uniform_across_its_buckets() -> None:
    """Where the first elements land, and where the last land, spread evenly over the output (chi-square)."""
    n = 8 * K.PERMUTATION_BUCKET
    out = np.empty(n, np.int64)
    bins = 16
    for lo, hi in ((0, n // 8), (n - n // 8, n)):
        counts = np.zeros(bins)
        for seed in range(4):
            K.random_permutation(seed, out)
            pos = np.flatnonzero((out >= lo) & (out < hi))
            counts += np.bincount(pos * bins // n, minlength=bins)
        expected = counts.sum() / bins
        chi2 = ((counts - expected) ** 2 / expected).sum()
        assert chi2 < 37.7, chi2  # 15 degrees of freedom, p = 0.001
    K.random_permutation(0, out)
    ascending = np.mean(out[1:] > out[:-1])
    assert abs(ascending - 0.5) < 0.01  # no runs left in order within a bucket


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 numba threads")
def test_random_permutation_does_not_depend_on_the_thread_count() -> None:
    n = 3 * K.PERMUTATION_BUCKET + 11
    one, two = np.empty(n, np.int64), np.empty(n, np.int64)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        K.random_permutation(5, one)
        numba.set_num_threads(2)
        K.random_permutation(5, two)
    finally:
        numba.set_num_threads(before)
    assert np.array_equal(one, two)
