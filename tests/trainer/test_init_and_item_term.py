"""``nn`` started from a ``dot`` model's embeddings (frozen or fine-tuned), and the item term a ``dot``
version is published with (trainer side; serving is tests/api/test_item_term.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from movierec.item_term import ItemTerm
from movierec.store import ModelStore
from trainer import TrainerError
from trainer.fit import Embeddings, FitParams, fit
from trainer.fit.init import load_embeddings
from trainer.pipeline import train_and_publish

from .conftest import write_udata


def _nn(**kw: object) -> FitParams:
    return FitParams(model="nn", factors=4, epochs=3, lr=0.01, wd=0.01, batch_size=256, rank_weight=0.5,
                     negatives=8, hidden=(8,), seed=2, **kw)  # type: ignore[arg-type]


def _dot_embeddings(synth, fast_params) -> Embeddings:  # noqa: ANN001
    dot, _ = fit(synth, fast_params)
    return Embeddings.of_model(dot, synth.user_ids, synth.movie_ids)


@pytest.mark.parametrize("frozen", [True, False])
def test_nn_starts_from_the_dot_embeddings_by_id(synth, fast_params, frozen: bool) -> None:  # noqa: ANN001
    emb = _dot_embeddings(synth, fast_params)
    # The source knows every user but the first and every movie but the last (by id, not by row).
    src = Embeddings(emb.user_ids[1:], emb.movie_ids[:-1], emb.user_factors[1:], emb.movie_factors[:-1])
    model, _ = fit(synth, _nn(freeze_embeddings=frozen), init=src)
    assert model.factors == emb.factors  # the embeddings decide the factor count
    users, movies = model.user_factors.detach().numpy(), model.movie_factors.detach().numpy()
    if frozen:
        np.testing.assert_array_equal(users[1:], src.user_factors)
        np.testing.assert_array_equal(movies[:-1], src.movie_factors)
    else:
        assert not np.allclose(users[1:], src.user_factors)
        np.testing.assert_allclose(users[1:], src.user_factors, atol=0.5)  # moved from there, not re-drawn
    # Rows the source lacks start from the usual small random init.
    assert np.abs(users[0]).max() < 0.2 and not np.allclose(users[0], emb.user_factors[0])


def test_init_only_for_nn(synth, fast_params) -> None:  # noqa: ANN001
    with pytest.raises(ValueError):
        fit(synth, fast_params, init=_dot_embeddings(synth, fast_params))


def test_pipeline_publishes_nn_from_a_stored_dot_version(tmp_path: Path, synth, fast_params) -> None:  # noqa: ANN001
    store = ModelStore(tmp_path / "models")
    dot = train_and_publish(lambda: synth, store, fast_params)
    params = dataclasses.replace(_nn(), init_from=str(dot.version), freeze_embeddings=True)
    result = train_and_publish(lambda: synth, store, params, force=True)
    art = store.load(result.version)
    assert art.kind == "nn" and art.manifest["factors"] == fast_params.factors
    assert art.manifest["params"]["init_from"] == "1" and art.manifest["params"]["freeze_embeddings"]
    np.testing.assert_array_equal(art.tensors["movie_factors"], store.load(1).tensors["movie_factors"])
    with pytest.raises(TrainerError, match="nn model"):  # an nn version is no embedding source
        load_embeddings(str(result.version), store.root)
    with pytest.raises(TrainerError, match="version number or a version directory"):
        load_embeddings("nowhere", store.root)


def test_cli_init_from_errors_are_clear(tmp_path: Path, synth, monkeypatch) -> None:  # noqa: ANN001
    from movierec.settings import get_settings

    from .test_export_pipeline import _cli

    monkeypatch.setenv("MOVIEREC_MODEL_STORE", str(tmp_path / "models"))
    get_settings.cache_clear()
    src = str(write_udata(tmp_path / "ml", synth))
    runner = CliRunner()
    for args, says in ((["--freeze-embeddings"], "needs --init-from"), (["--init-from", "1"], "--model nn"),
                       (["--model", "nn", "--init-from", "7"], "error:")):
        out = runner.invoke(_cli(), ["train", "--source", src, *args])
        assert out.exit_code != 0 and says in out.output and "Traceback" not in out.output, out.output
    get_settings.cache_clear()


def test_a_dot_version_carries_the_item_term_it_was_evaluated_with(tmp_path: Path, synth, fast_params) -> None:  # noqa: ANN001
    store = ModelStore(tmp_path / "models")
    params = dataclasses.replace(fast_params, item_blend=2.0, item_lambda=20.0, item_neighbours=5)
    with_term = train_and_publish(lambda: synth, store, params)
    art = store.load(with_term.version)
    term = ItemTerm.from_tensors(art.tensors, synth.n_movies)
    assert term is not None and np.all(np.diff(term.indptr) <= 5)
    assert art.manifest["item_term"] == {"method": "ease", "lambda": 20.0, "neighbours": 5, "blend": 2.0,
                                         "nnz": term.nnz}
    without = train_and_publish(lambda: synth, store, fast_params, force=True)
    plain = store.load(without.version)
    assert ItemTerm.from_tensors(plain.tensors) is None and "item_term" not in plain.manifest
    # The evaluation ranked with the term: a different NDCG from the same embeddings alone.
    assert art.manifest["metrics"]["ndcg@10"] != plain.manifest["metrics"]["ndcg@10"]
