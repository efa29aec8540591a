"""Export round trip through the store, the whole pipeline, the gate, publish failures, the CLI."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from movierec.store import ModelStore
from trainer import DivergedError, GateRefusedError, NoDataError, TrainerError
from trainer.fit import fit
from trainer.gate import check
from trainer.models import store_tensors
from trainer.pipeline import evaluation_protocol, train_and_publish
from tests.trainer.conftest import planted, write_udata


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def _numpy_scores(art, users: np.ndarray, movies: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ratings and ranking scores computed exactly as the movierec.store docstring defines them."""
    t, man = art.tensors, art.manifest
    lo, hi = man["y_range"]
    g = man["global_bias"]
    u, m = t["user_factors"][users], t["movie_factors"][movies]
    if man["kind"] == "dot":
        logit = (u * m).sum(1) + t["user_bias"][users] + t["movie_bias"][movies] + g
        rank = (u * m).sum(1) + (t["rank_bias"][movies] if "rank_bias" in t else t["movie_bias"][movies])
        rating = lo + (hi - lo) * _sigmoid(logit)
    else:
        x = np.concatenate([u, m], axis=1)
        n_layers = len([k for k in t if k.startswith("mlp.") and k.endswith(".weight")])
        for i in range(n_layers):
            x = x @ t[f"mlp.{i}.weight"].T + t[f"mlp.{i}.bias"]
            if i < n_layers - 1:
                x = np.maximum(x, 0)
        logit = x[:, 0]
        rating = lo + (hi - lo) * _sigmoid(logit + g)
        rank = logit + t["rank_bias"][movies] if "rank_bias" in t else logit
    return np.clip(rating, *man["rating_scale"]), rank


@pytest.mark.parametrize("kind", ["dot", "nn"])
def test_export_round_trip_numpy_scoring_matches_torch(tmp_path: Path, synth, fast_params, kind) -> None:
    params = dataclasses.replace(fast_params, model=kind, epochs=3)
    model, _ = fit(synth, params)
    store = ModelStore(tmp_path / "models")
    manifest = {"kind": kind, "factors": params.factors, "y_range": list(params.y_range),
                "rating_scale": [0.5, 5.0], "global_bias": model.global_bias,
                "counts": {"users": synth.n_users, "movies": synth.n_movies, "ratings": len(synth)}}
    version = store.publish(store_tensors(model, synth.user_ids, synth.movie_ids), manifest)
    art = store.load(version)
    rng = np.random.default_rng(0)
    users = rng.integers(0, synth.n_users, 200)
    movies = rng.integers(0, synth.n_movies, 200)
    rating, rank = _numpy_scores(art, users, movies)
    np.testing.assert_allclose(rating, model.predict(users, movies), rtol=1e-5, atol=1e-5)
    torch_rank = model.rank_scores(np.unique(users))
    pos = np.searchsorted(np.unique(users), users)
    order_np = rank.reshape(-1)
    np.testing.assert_allclose(order_np, torch_rank[pos, movies], rtol=1e-4, atol=1e-4)
    assert np.array_equal(art.tensors["user_ids"], synth.user_ids)


def _state(store: ModelStore) -> tuple[list[int], int | None]:
    return store.versions(), store.current_version()


def test_pipeline_publishes_with_metrics_report_and_refit(tmp_path: Path, synth, fast_params) -> None:
    store = ModelStore(tmp_path / "models")
    result = train_and_publish(lambda: synth, store, fast_params)
    art = store.load()
    assert art.version == result.version == 1
    man = art.manifest
    for key in ("rmse", "mae", "ndcg@10", "recall@10", "hr@10"):
        assert key in man["metrics"] and key in man["baseline_metrics"]
    assert man["metrics"]["rmse"] < man["baseline_metrics"]["rmse"]
    assert man["metrics"]["ndcg@10"] > man["baseline_metrics"]["ndcg@10"]
    assert man["data"] == man["data_snapshot"] == synth.snapshot()
    assert isinstance(man["rank_scale"], float) and man["rank_scale"] > 0
    assert man["counts"]["ratings"] == len(synth)
    assert "refit" in man and man["evaluation"] == evaluation_protocol()
    assert (art.path / "curves.png").stat().st_size > 1000
    assert (art.path / "movie_pca.png").stat().st_size > 1000
    assert man["gate"]["passed"]


def test_gate_refuses_a_worse_model_and_force_overrides(tmp_path: Path, synth, fast_params) -> None:
    store = ModelStore(tmp_path / "models")
    train_and_publish(lambda: synth, store, fast_params)
    before = _state(store)
    worse = dataclasses.replace(fast_params, epochs=1, lr=1e-4)
    with pytest.raises(GateRefusedError, match="worse than the current model"):
        train_and_publish(lambda: synth, store, worse)
    assert _state(store) == before
    result = train_and_publish(lambda: synth, store, worse, force=True)
    assert result.version == 2 and store.load().manifest["gate"]["forced"]


def test_gate_unit_rules() -> None:
    proto = evaluation_protocol()
    data = {"ratings": 10, "max_rated_at": 5}
    cur = {"version": 4, "metrics": {"rmse": 0.90, "ndcg@10": 0.15}, "evaluation": proto, "data": data}

    def cand(rmse: float, ndcg: float, evaluation=proto, data=data) -> dict:
        return {"metrics": {"rmse": rmse, "ndcg@10": ndcg}, "evaluation": evaluation, "data": data}

    assert check(cand(0.91, 0.15), cur, 0.03).passed  # within 3 %
    refused = check(cand(0.95, 0.15), cur, 0.03)
    assert not refused.passed and "rmse" in refused.reason and refused.same_data
    assert not check(cand(0.90, 0.10), cur, 0.03).passed
    assert check(cand(0.95, 0.10), None).passed  # nothing to compare with
    assert check(cand(0.95, 0.10), cur | {"evaluation": {"other": 1}}).passed  # different protocol
    changed = check(cand(0.95, 0.15, data={"ratings": 11, "max_rated_at": 6}), cur, 0.03)
    assert not changed.passed and not changed.same_data


def test_publish_failure_leaves_store_unchanged(tmp_path: Path, synth, fast_params, monkeypatch) -> None:
    store = ModelStore(tmp_path / "models")
    train_and_publish(lambda: synth, store, fast_params)
    before = _state(store)

    def disk_full(*_args, **_kwargs):
        def write(_directory: Path) -> None:
            raise OSError(28, "No space left on device")
        return write

    monkeypatch.setattr("trainer.pipeline.report_writer", disk_full)
    with pytest.raises(TrainerError, match="store unchanged"):
        train_and_publish(lambda: synth, store, fast_params, force=True)
    assert _state(store) == before
    assert not [p for p in store.root.iterdir() if p.name.startswith(".tmp-")]


def test_nan_loss_publishes_nothing(tmp_path: Path, synth, fast_params) -> None:
    bad = synth.subset(np.arange(len(synth)))
    bad.rating = bad.rating.copy()
    bad.rating[0] = np.nan
    store = ModelStore(tmp_path / "models")
    with pytest.raises(DivergedError):
        train_and_publish(lambda: bad, store, fast_params)
    assert store.versions() == []


def test_too_little_data_and_single_user(tmp_path: Path, fast_params) -> None:
    store = ModelStore(tmp_path / "models")
    tiny = planted(n_users=2, n_movies=5, per_user=2)
    with pytest.raises(NoDataError, match="at least"):
        train_and_publish(lambda: tiny, store, fast_params)
    one = planted(n_users=1, n_movies=60, per_user=40)
    result = train_and_publish(lambda: one, store, fast_params)
    assert store.load().manifest["counts"]["users"] == 1 and result.version == 1


def _cli() -> typer.Typer:
    from trainer.cli import train

    app = typer.Typer()
    app.command("train")(train)
    app.command("noop")(lambda: None)  # keeps "train" a subcommand, as in the movierec command (cli/)
    return app


def test_cli_trains_from_files_then_gate_refuses(tmp_path: Path, synth, monkeypatch) -> None:
    from movierec.settings import get_settings

    monkeypatch.setenv("MOVIEREC_MODEL_STORE", str(tmp_path / "models"))
    monkeypatch.setenv("MOVIEREC_TRAIN_THREADS", "1")
    get_settings.cache_clear()
    src = write_udata(tmp_path / "ml", synth)
    runner = CliRunner()
    args = ["train", "--source", str(src), "--factors", "8", "--epochs", "8", "--lr", "0.02", "--batch-size", "256"]
    ok = runner.invoke(_cli(), args)
    assert ok.exit_code == 0, ok.output
    assert "published version 1" in ok.output
    bad = runner.invoke(_cli(), [*args[:-6], "--epochs", "1", "--lr", "0.00001"])
    assert bad.exit_code == 3, bad.output
    assert "Traceback" not in bad.output and "not published" in bad.output
    assert ModelStore(tmp_path / "models").versions() == [1]
    get_settings.cache_clear()


def test_cli_empty_database_exits_2(tmp_path: Path, monkeypatch) -> None:
    from movierec.db.engine import make_engine
    from movierec.db.schema import Base
    from movierec.settings import get_settings

    url = f"sqlite:///{tmp_path / 'empty.db'}"
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    engine.dispose()
    monkeypatch.setenv("MOVIEREC_DATABASE_URL", url)
    monkeypatch.setenv("MOVIEREC_MODEL_STORE", str(tmp_path / "models"))
    get_settings.cache_clear()
    out = CliRunner().invoke(_cli(), ["train"])
    assert out.exit_code == 2
    assert "empty" in out.output and "Traceback" not in out.output
    assert ModelStore(tmp_path / "models").versions() == []
    get_settings.cache_clear()
