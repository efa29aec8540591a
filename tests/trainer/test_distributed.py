"""Distributed jobs on CPU (gloo): ``movierec train --nproc 2`` and ``python -m trainer.distributed``.

Real processes and a real rendezvous, on MovieLens 100K: a 2-process job reaches one process's
quality and publishes exactly one version; a rank killed mid-fit fails the job with the store
unchanged; ranks that disagree on data or parameters stop before training.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from movierec.store import ModelStore
from trainer.data import load_files
from trainer.distributed import RankFailedError, RanksDisagreeError, checksum
from trainer.fit import FitParams, defaults_for
from trainer.pipeline import evaluate

EPOCHS = 3


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOVIEREC_")}
    # One thread per process: two ranks on a 2-core machine. stderr stays line-buffered (as Python
    # keeps it by default), so the ranks' lines do not interleave mid-line on the shared pipe.
    env.pop("PYTHONUNBUFFERED", None)
    return {**env, "MOVIEREC_TRAIN_THREADS": "1", "MOVIEREC_LOG_LEVEL": "WARNING"}


def _train(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("movierec")
    return [str(script), "train", *args]


def test_two_process_job_matches_one_process_and_publishes_once(tmp_path: Path, ml100k_dir: Path) -> None:
    store = tmp_path / "models"
    done = subprocess.run(_train("--source", str(ml100k_dir), "--store", str(store), "--nproc", "2",
                                 "--epochs", str(EPOCHS)), env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank 1/2" in done.stderr and "rank 0/2" in done.stderr
    models = ModelStore(store)
    assert models.versions() == [1] and models.current_version() == 1
    manifest = models.read_manifest(1)
    assert manifest["history"]["refit"]["world_size"] == 2
    assert manifest["history"]["refit"]["engine"] == "torch/cpu"
    # One process (the numba engine, the CPU default) with the same parameters (movierec train's
    # defaults, item term included) and seed.
    data = load_files(ml100k_dir)
    alone, _, _ = evaluate(data, dataclasses.replace(defaults_for("dot"), epochs=EPOCHS))
    got = manifest["metrics"]
    assert abs(got["rmse"] - alone["rmse"]) <= 0.003, (got["rmse"], alone["rmse"])
    assert abs(got["ndcg@10"] - alone["ndcg@10"]) <= 0.005, (got["ndcg@10"], alone["ndcg@10"])
    assert got["rmse"] < 1.0
    art = models.load(1)
    assert art.tensors["user_factors"].shape == (data.n_users, FitParams().factors)
    assert np.isfinite(art.tensors["movie_factors"]).all()


def test_rank_killed_mid_fit_fails_the_job_and_store_is_unchanged(tmp_path: Path, ml100k_dir: Path) -> None:
    store = tmp_path / "models"
    proc = subprocess.Popen(_train("--source", str(ml100k_dir), "--store", str(store), "--nproc", "2",
                                   "--epochs", "20"), env=_env(), stderr=subprocess.PIPE, text=True)
    seen: list[str] = []
    victim = None
    deadline = time.monotonic() + 240
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            seen.append(line)
            found = re.search(r"rank 1/2 \(pid (\d+)\)", line)
            if found:
                victim = int(found.group(1))
            # training is under way on every rank (an ensemble's members count their epochs as one run: 2/60)
            if victim is not None and re.search(r"epoch 2/\d+", line):
                os.kill(victim, signal.SIGKILL)
                break
            assert time.monotonic() < deadline, "".join(seen)
        rest = proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert victim is not None, "".join(seen)
    assert proc.returncode == RankFailedError.exit_code, "".join(seen) + rest
    assert "nothing was published" in rest
    assert not store.exists() or (ModelStore(store).versions() == [] and ModelStore(store).current_version() is None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_ranks_that_disagree_stop_before_training(tmp_path: Path, ml100k_dir: Path) -> None:
    """Two ranks started by hand (as torchrun would) with different seeds."""
    store = tmp_path / "models"
    port = str(_free_port())
    procs = []
    for rank, seed in ((0, 1), (1, 2)):
        env = {**_env(), "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        procs.append(subprocess.Popen([sys.executable, "-m", "trainer.distributed", "--source", str(ml100k_dir),
                                       "--store", str(store), "--seed", str(seed)], env=env,
                                      stderr=subprocess.PIPE, text=True))
    errors = [p.communicate(timeout=120)[1] for p in procs]
    for p, err in zip(procs, errors, strict=True):
        assert p.returncode == RanksDisagreeError.exit_code, err
        assert "stopped before training" in err and "epoch" not in err
    assert not store.exists() or ModelStore(store).versions() == []


def test_checksum_sees_every_rating_and_parameter(synth) -> None:
    params = FitParams()
    base = checksum(synth, params)
    assert checksum(synth, FitParams()) == base
    assert checksum(synth, dataclasses.replace(params, lr=0.02)) != base
    changed = dataclasses.replace(synth, rating=synth.rating.copy())
    changed.rating[-1] += 0.5
    assert checksum(changed, params) != base


def test_nproc_with_numba_engine_is_a_clear_error(tmp_path: Path, ml100k_dir: Path) -> None:
    done = subprocess.run(_train("--source", str(ml100k_dir), "--store", str(tmp_path / "m"), "--nproc", "2",
                                 "--engine", "numba"), env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 5 and "torch engine" in done.stderr, done.stderr


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="no GPU here: NCCL jobs need GPUs")
def test_nccl_job_on_gpus_publishes_once(tmp_path: Path, ml100k_dir: Path) -> None:
    import torch

    n = min(2, torch.cuda.device_count())
    done = subprocess.run(_train("--source", str(ml100k_dir), "--store", str(tmp_path / "m"), "--nproc", str(n),
                                 "--device", "cuda", "--epochs", str(EPOCHS)),
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert ModelStore(tmp_path / "m").versions() == [1]


def test_plain_movierec_train_inside_a_torchrun_job_refuses(tmp_path: Path, ml100k_dir: Path) -> None:
    """Each process would publish its own model: only ``-m trainer.distributed`` joins a job."""
    env = {**_env(), "RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}
    done = subprocess.run(_train("--source", str(ml100k_dir), "--store", str(tmp_path / "m")), env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "trainer.distributed" in done.stderr, done.stderr
    assert not (tmp_path / "m").exists()


def test_gate_refusal_on_rank_0_is_the_jobs_exit_status(tmp_path: Path, ml100k_dir: Path) -> None:
    """rank 0's reason (the gate's 3) comes back through the launcher, and the store keeps its one version."""
    from trainer.pipeline import train_and_publish

    store = ModelStore(tmp_path / "models")
    data = load_files(ml100k_dir)
    # The current version is movierec train's defaults at EPOCHS epochs, the candidate the same at 1 epoch with
    # no tolerance: the defaults' rating refit (trainer.fit.refit) lifts even a 1-epoch fit's RMSE past a
    # plain FitParams() model's, so the current version must be trained the same way to stay ahead.
    train_and_publish(lambda: data, store, dataclasses.replace(defaults_for("dot"), epochs=EPOCHS))
    done = subprocess.run(_train("--source", str(ml100k_dir), "--store", str(store.root), "--nproc", "2",
                                 "--epochs", "1", "--tolerance", "0"), env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 3, done.stderr[-3000:]
    assert "not published" in done.stderr
    assert store.versions() == [1] and store.current_version() == 1
