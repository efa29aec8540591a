"""Parameters and history as manifests record them: the renamed keys (``bpr_weight``, ``bpr``) still read.

``rank_weight`` was ``bpr_weight`` and ``History.rank`` was ``History.bpr`` in manifests written
before the ranking term's default became a sampled softmax; ``movierec train --bpr-weight`` was
the option's name.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from movierec.store import MANIFEST_FILE, ModelStore
from trainer import GateRefusedError
from trainer.fit import FitParams, History, defaults_for
from trainer.fit.params import ENSEMBLE_MAX_RATINGS, ONE_FIT, for_data
from trainer.pipeline import train_and_publish


def _with_old_keys(manifest: dict) -> dict:
    """The manifest as the trainer wrote it before the rename."""
    old = json.loads(json.dumps(manifest))
    old["params"]["bpr_weight"] = old["params"].pop("rank_weight")
    for run in old["history"].values():
        run["bpr"] = run.pop("rank")
    return old


def test_params_and_history_round_trip_and_read_old_keys() -> None:
    params = dataclasses.replace(defaults_for("nn"), rank_weight=0.3)
    assert FitParams.from_dict(params.to_dict()) == params
    old = params.to_dict()
    old["bpr_weight"] = old.pop("rank_weight")
    assert FitParams.from_dict(old) == params
    with pytest.raises(TypeError):
        FitParams.from_dict({**params.to_dict(), "no_such_param": 1})
    history = History(loss=[0.9, 0.8], rank=[2.0, 1.5], valid_rmse=[1.0, 0.95], seconds=[0.1, 0.1], threads=2)
    assert History.from_dict(history.to_dict()) == history
    recorded = history.to_dict()
    recorded["bpr"] = recorded.pop("rank")
    assert History.from_dict(recorded) == history


def test_a_store_written_under_the_old_keys_loads_and_the_gate_compares_with_it(tmp_path: Path, synth,
                                                                                 fast_params) -> None:
    store = ModelStore(tmp_path / "models")
    train_and_publish(lambda: synth, store, fast_params)
    path = store.version_path(1) / MANIFEST_FILE
    path.write_text(json.dumps(_with_old_keys(json.loads(path.read_text()))))
    art = store.load()
    assert "bpr_weight" in art.manifest["params"] and "bpr" in art.manifest["history"]["refit"]
    assert FitParams.from_dict(art.manifest["params"]) == fast_params
    assert History.from_dict(art.manifest["history"]["refit"]).rank == art.manifest["history"]["refit"]["bpr"]
    worse = dataclasses.replace(fast_params, epochs=1, lr=1e-4)
    with pytest.raises(GateRefusedError, match=r"worse than the current model \(version 1\) on the same held-out"):
        train_and_publish(lambda: synth, store, worse)
    result = train_and_publish(lambda: synth, store, fast_params)
    assert result.gate.passed and result.gate.same_data
    assert result.gate.compared["rmse"]["current"] == art.manifest["metrics"]["rmse"]
    assert "rank_weight" in result.manifest["params"] and "rank" in result.manifest["history"]["refit"]


def _captured_train(monkeypatch: pytest.MonkeyPatch) -> tuple[typer.Typer, list[tuple]]:
    import trainer.cli

    calls: list[tuple] = []
    monkeypatch.setattr(trainer.cli, "_run", lambda *args: calls.append(args))
    app = typer.Typer()
    app.command("train")(trainer.cli.train)
    app.command("noop")(lambda: None)  # keeps "train" a subcommand, as in movierec.cli
    return app, calls


def test_cli_bpr_weight_is_a_hidden_deprecated_alias_of_rank_weight(monkeypatch) -> None:
    app, calls = _captured_train(monkeypatch)
    runner = CliRunner()
    assert runner.invoke(app, ["train", "--rank-weight", "0.3"]).exit_code == 0
    old = runner.invoke(app, ["train", "--bpr-weight", "0.2"])
    assert old.exit_code == 0, old.output
    assert "deprecated" in old.output and "--rank-weight" in old.output
    assert runner.invoke(app, ["train", "--bpr-weight", "0.4", "--rank-weight", "0.4"]).exit_code == 0
    assert [call[6] for call in calls] == [0.3, 0.2, 0.4]  # _run's rank_weight
    both = runner.invoke(app, ["train", "--bpr-weight", "0.2", "--rank-weight", "0.3"])
    assert both.exit_code == 2 and "--rank-weight" in both.output and len(calls) == 3
    shown = runner.invoke(app, ["train", "--help"]).output
    assert "--rank-weight" in shown and "--bpr-weight" not in shown


def test_train_options_stay_as_given_where_the_defaults_follow_the_data(monkeypatch, tmp_path: Path) -> None:
    """`movierec train --lr X` names lr in ``fixed``, so ``for_data`` never replaces it; the rest of
    the size-dependent defaults still follow the data."""
    import types

    import trainer.cli
    import trainer.pipeline

    seen: list[FitParams] = []

    def capture(load, store, params, **kwargs):  # noqa: ANN001, ANN003, ANN202
        seen.append(params)
        return types.SimpleNamespace(manifest={"metrics": {}}, version=1, seconds=0.0)

    monkeypatch.setattr(trainer.pipeline, "train_and_publish", capture)
    trainer.cli._run("dot", None, None, 0.02, None, None, None, 42, True, None, tmp_path, tmp_path / "store")
    trainer.cli._run("dot", None, None, None, None, None, None, 42, True, None, tmp_path, tmp_path / "store")
    asked, default = seen
    assert asked.fixed == ("lr",) and asked.lr == 0.02 and default.fixed == ()
    assert for_data(asked, ENSEMBLE_MAX_RATINGS + 1, 100).lr == 0.02
    assert for_data(default, ENSEMBLE_MAX_RATINGS + 1, 100).lr == ONE_FIT["lr"]
