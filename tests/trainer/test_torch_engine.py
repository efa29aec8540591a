"""The torch engine (trainer/fit/torch_dot.py): the numba engine's step in torch ops, on any device.

Held to the numba engine step by step (same order, negatives and initial tables give the same
tables), to its quality on MovieLens 100K, and ``--device`` must fail clearly where no GPU is.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from movierec.store import ModelStore
from trainer.data import Ratings, load_files
from trainer.fit import DeviceUnavailableError, FitParams, fit, make_model, resolve
from trainer.fit.dot import DotStep
from trainer.fit.lazy_adam import RowAdam
from trainer.fit.sampling import Ranking
from trainer.fit.torch_dot import TorchDotStep
from trainer.pipeline import evaluate
from tests.trainer.conftest import write_udata

CUDA = torch.cuda.is_available()


def _two_epochs(data: Ratings, params: FitParams, engine: str) -> tuple[torch.nn.Module, list[float]]:
    """Two epochs of one engine's step from the same initial model, order and negatives."""
    model = make_model(params, data.n_users, data.n_movies, float(data.rating.mean()), torch.Generator().manual_seed(1))
    ranking = Ranking.of(data, params)
    step = (DotStep(model, data, params, ranking) if engine == "numba"
            else TorchDotStep(model, data, params, ranking, resolve("cpu", "torch")))
    gen = torch.Generator().manual_seed(5)
    bs, losses, t = params.batch_size, [], 0
    for _ in range(2):
        step.begin_epoch(torch.randperm(len(data), generator=gen), ranking.draw(gen, -(-len(data) // bs), len(data)))
        for batch, s in enumerate(range(0, len(data), bs)):
            t += 1
            sq, rank = step(batch, slice(s, s + bs), 0.01, t)
            losses += [float(sq), float(rank)]
        step.end_epoch()
    step.finish()
    return model, losses


@pytest.mark.parametrize("extra", [
    {},  # the defaults: sampled softmax, popularity negatives, recency-weighted positives
    {"rank_loss": "bpr"},
    {"rank_scale": 0.0},  # the learned logit scale
    {"rank_positives": "liked", "rank_sample": 0.3, "rank_sample_min": 0},  # weight-0 rows, part of each batch ranked
    {"rank_weight": 0.0},  # MSE alone
])
def test_torch_step_computes_the_numba_step(synth, extra) -> None:
    params = FitParams(factors=8, batch_size=256, negatives=16, lr=0.02, seed=3, **extra)
    a, loss_a = _two_epochs(synth, params, "numba")
    b, loss_b = _two_epochs(synth, params, "torch")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=5e-5, msg=name)
    np.testing.assert_allclose(loss_a, loss_b, rtol=1e-4)
    assert a.rank_scale == pytest.approx(b.rank_scale, rel=1e-5)
    assert not torch.equal(a.user_factors, make_model(params, synth.n_users, synth.n_movies, 3.5,
                                                      torch.Generator().manual_seed(1)).user_factors)


@pytest.mark.parametrize("tail", [None, (4, 5)])
def test_lazy_adam_dense_and_sparse_agree_and_leave_untouched_rows(tail) -> None:
    gen = torch.Generator().manual_seed(0)
    start = torch.randn(30, 5, generator=gen)
    tables = {mode: start.clone() for mode in ("sparse", "dense")}
    opts = {mode: RowAdam(t, mode) for mode, t in tables.items()}
    for t in range(1, 6):
        index = torch.randint(0, 20, (12,), generator=gen)  # rows 20..29 never touched; duplicates summed
        grad = torch.randn(12, 5, generator=gen)
        for opt in opts.values():
            opt.step(index, grad, 0.1, t, *(tail or ()))
    torch.testing.assert_close(tables["sparse"], tables["dense"])
    torch.testing.assert_close(opts["sparse"].m2, opts["dense"].m2)
    assert torch.equal(tables["sparse"][20:], start[20:])
    assert not torch.equal(tables["sparse"][:20], start[:20])


def test_movie_bias_moves_only_for_positives() -> None:
    table = torch.zeros(4, 3)
    opt = RowAdam(table, "sparse")
    # rows 0, 1 positives; 2 only a negative; the last column is the movie bias (tail from 2)
    opt.step(torch.tensor([0, 1, 2]), torch.ones(3, 3), 0.1, 1, tail_from=2, tail_limit=2)
    assert (table[:2] != 0).all()
    assert (table[2, :2] != 0).all() and table[2, 2] == 0 and opt.m1[2, 2] == 0
    assert (table[3] == 0).all()


def test_device_resolution() -> None:
    assert resolve("cpu") == resolve("cpu", "numba")
    assert resolve("cpu", "torch").kind == "torch"
    assert resolve("auto", model="nn").device == "cpu"
    assert resolve("auto").device.startswith("cuda") == CUDA
    with pytest.raises(DeviceUnavailableError):
        resolve("cpu", "numba", model="nn")
    if CUDA:
        with pytest.raises(DeviceUnavailableError):
            resolve("cuda", "numba")
    else:
        with pytest.raises(DeviceUnavailableError) as err:
            resolve("cuda")
        assert err.value.exit_code == 5


def _cli():  # type: ignore[no-untyped-def]
    import typer

    from trainer.cli import train

    app = typer.Typer()
    app.command()(train)
    app.command("other")(lambda: None)  # two commands: typer then expects the command name
    return app


@pytest.mark.skipif(CUDA, reason="checks the error where no GPU is present")
def test_cli_device_cuda_without_gpu_is_exit_5_and_store_untouched(tmp_path: Path, synth) -> None:
    source = write_udata(tmp_path / "ml", synth)
    store = tmp_path / "models"
    out = CliRunner().invoke(_cli(), ["train", "--source", str(source), "--store", str(store), "--device", "cuda"])
    assert out.exit_code == 5, out.output
    assert "--device cuda" in out.output and "Traceback" not in out.output
    assert not store.exists() or ModelStore(store).versions() == []


def test_cli_torch_engine_on_cpu_publishes_the_same_format(tmp_path: Path, synth, monkeypatch) -> None:
    source = write_udata(tmp_path / "ml", synth)
    store = tmp_path / "models"
    args = ["train", "--source", str(source), "--store", str(store), "--epochs", "4", "--factors", "8",
            "--batch-size", "256"]
    for extra in (["--engine", "torch", "--device", "cpu"], ["--engine", "numba", "--force"]):
        out = CliRunner().invoke(_cli(), args + extra)
        assert out.exit_code == 0, out.output
    a, b = ModelStore(store).load(1), ModelStore(store).load(2)
    assert a.manifest["history"]["refit"]["engine"] == "torch/cpu"
    assert b.manifest["history"]["refit"]["engine"] == "numba/cpu"
    assert sorted(a.tensors) == sorted(b.tensors)
    for name, x in a.tensors.items():  # same seed, same order: the same model, to float rounding
        assert x.dtype == b.tensors[name].dtype
        np.testing.assert_allclose(x, b.tensors[name], rtol=1e-3, atol=1e-4, err_msg=name)


def _within_tolerance(ml100k_dir: Path, engine: str, epochs: int) -> None:
    """Held-out RMSE (random 10 %) and NDCG@10 (each user's latest 20 %) as the pipeline measures them."""
    data = load_files(ml100k_dir)
    ours = partial(fit, engine=resolve("cuda" if engine == "cuda" else "cpu", "torch"))
    numba = partial(fit, engine=resolve("cpu", "numba"))
    found: dict[str, list[tuple[float, float]]] = {"ours": [], "numba": []}
    for seed in (1, 2, 3):
        params = dataclasses.replace(FitParams(), epochs=epochs, seed=seed)
        for name, fitter in (("ours", ours), ("numba", numba)):
            metrics = evaluate(data, params, fitter=fitter)[0]
            found[name].append((metrics["rmse"], metrics["ndcg@10"]))
    (r_ours, n_ours), (r_numba, n_numba) = np.mean(found["ours"], axis=0), np.mean(found["numba"], axis=0)
    assert abs(r_ours - r_numba) <= 0.003, (r_ours, r_numba)
    assert abs(n_ours - n_numba) <= 0.005, (n_ours, n_numba)
    # and it learned: the untrained model (the global mean, random ranks) has RMSE ~1.13, NDCG@10 ~0.01
    assert n_ours > 0.05 and r_ours < 1.0


def test_torch_engine_on_cpu_matches_numba_on_ml100k(ml100k_dir: Path) -> None:
    """Mean of 3 seeds; 4 epochs keep it short (the engines agree step by step, so more epochs only cost time)."""
    _within_tolerance(ml100k_dir, "torch", epochs=4)


@pytest.mark.skipif(not CUDA, reason="no GPU here: the CUDA engine's ML-100K check needs one (bench/gpu.py runs it)")
def test_cuda_engine_matches_numba_on_ml100k(ml100k_dir: Path) -> None:
    _within_tolerance(ml100k_dir, "cuda", epochs=20)
