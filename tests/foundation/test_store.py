"""The model store: atomic publish, validation on load, rollback and pruning."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from movierec.store import CorruptModelError, ModelStore, StoreError


def make_model(n_users: int = 5, n_movies: int = 7, k: int = 3, seed: int = 0) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    tensors = {
        "user_ids": np.arange(1, n_users + 1, dtype=np.int64),
        "movie_ids": np.arange(10, 10 + n_movies, dtype=np.int64),
        "user_factors": rng.normal(size=(n_users, k)).astype(np.float32),
        "movie_factors": rng.normal(size=(n_movies, k)).astype(np.float32),
        "user_bias": rng.normal(size=n_users).astype(np.float32),
        "movie_bias": rng.normal(size=n_movies).astype(np.float32),
    }
    manifest = {
        "kind": "dot", "factors": k, "y_range": [0.0, 5.5], "rating_scale": [0.5, 5.0], "global_bias": 0.1,
        "counts": {"users": n_users, "movies": n_movies, "ratings": 20}, "metrics": {"rmse": 0.9},
    }
    return tensors, manifest


def test_publish_then_load_round_trips(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    tensors, manifest = make_model()
    assert store.publish(tensors, manifest) == 1
    artifact = store.load()
    assert artifact.version == 1 and artifact.kind == "dot"
    np.testing.assert_array_equal(artifact.tensors["movie_factors"], tensors["movie_factors"])
    assert artifact.manifest["metrics"] == {"rmse": 0.9}
    assert len(artifact.manifest["weights_sha256"]) == 64


def test_versions_increase_and_current_is_newest(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    for seed in range(3):
        store.publish(*make_model(seed=seed))
    assert store.versions() == [1, 2, 3]
    assert store.current_version() == 3


def test_failed_publish_leaves_store_as_it_was(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    store.publish(*make_model())
    before = sorted(p.name for p in tmp_path.iterdir())

    def broken_report(directory: Path) -> None:
        (directory / "curves.png").write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        store.publish(*make_model(seed=1), extra_files=broken_report)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert store.current_version() == 1


def test_invalid_model_is_never_published(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    tensors, manifest = make_model()
    tensors["user_factors"][0, 0] = np.nan
    with pytest.raises(CorruptModelError, match="NaN"):
        store.publish(tensors, manifest)
    assert store.versions() == []


def test_leftover_temp_dir_of_a_killed_publish_is_ignored_and_cleaned(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    (tmp_path / ".tmp-dead").mkdir()
    (tmp_path / ".tmp-dead" / "model.safetensors").write_bytes(b"half")
    assert store.versions() == [] and store.current_version() is None
    store.publish(*make_model())
    assert not (tmp_path / ".tmp-dead").exists()
    assert store.versions() == [1]


def test_truncated_weights_are_refused(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    store.publish(*make_model())
    weights = tmp_path / "1" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptModelError, match="sha256"):
        store.load(1)


def test_manifest_that_does_not_match_tensors_is_refused(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    store.publish(*make_model())
    path = tmp_path / "1" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["factors"] = 4
    path.write_text(json.dumps(manifest))
    with pytest.raises(CorruptModelError, match="shape"):
        store.load(1)


def test_version_dir_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    ModelStore(outside).publish(*make_model())
    store_root = tmp_path / "store"
    store_root.mkdir()
    os.symlink(outside / "1", store_root / "1")
    store = ModelStore(store_root)
    assert store.versions() == []
    with pytest.raises(StoreError):
        store.load(1)


def test_rollback_and_publish_after_rollback(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    store.publish(*make_model(seed=0))
    store.publish(*make_model(seed=1))
    assert store.rollback() == 1
    assert store.current_version() == 1
    assert store.load().version == 1
    with pytest.raises(StoreError, match="no earlier version"):
        store.rollback()
    assert store.publish(*make_model(seed=2)) == 3
    assert store.current_version() == 3


def test_rollback_skips_damaged_versions(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    for seed in range(3):
        store.publish(*make_model(seed=seed))
    (tmp_path / "2" / "model.safetensors").write_bytes(b"junk")
    assert store.rollback() == 1


def test_prune_keeps_newest_and_never_the_current(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    for seed in range(4):
        store.publish(*make_model(seed=seed))
    store.set_current(1)
    removed = store.prune(2)
    assert removed == [2]
    assert store.versions() == [1, 3, 4]
    assert store.current_version() == 1


def test_publish_with_keep_prunes(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    for seed in range(5):
        store.publish(*make_model(seed=seed), keep=3)
    assert store.versions() == [3, 4, 5]


def test_list_reports_damaged_manifest_instead_of_hiding_it(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    store.publish(*make_model())
    store.publish(*make_model(seed=1))
    (tmp_path / "1" / "manifest.json").write_text("{not json")
    rows = store.list()
    assert [r["version"] for r in rows] == [1, 2]
    assert "error" in rows[0] and rows[1]["current"]


def test_report_file_names_are_checked(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    tensors, manifest = make_model()
    version = store.publish(tensors, manifest, extra_files=lambda d: (d / "loss.png").write_bytes(b"png"))
    (tmp_path / "secret.png").write_bytes(b"secret")
    assert store.report_files(version) == ["loss.png"]
    assert store.report_file(version, "loss.png") is not None
    for bad in ("../secret.png", "..", "manifest.json", "model.safetensors", ".hidden.png", "a/b.png"):
        assert store.report_file(version, bad) is None
    (store.version_path(version) / "link.png").symlink_to(tmp_path / "secret.png")
    assert store.report_files(version) == ["loss.png"] and store.report_file(version, "link.png") is None
    assert store.report_files(99) == [] and store.report_file(99, "loss.png") is None


def test_load_normalises_older_manifests(tmp_path: Path) -> None:
    """Versions written by older trainers load with the current keys: readers see one form."""
    store = ModelStore(tmp_path)
    tensors, manifest = make_model()
    version = store.publish(tensors, {**manifest, "data": {"max_rated_at": 7}, "rating_scale": {"min": 1, "max": 5}})
    artifact = store.load(version)
    assert artifact.manifest["data_snapshot"] == {"max_rated_at": 7}
    assert artifact.manifest["rating_scale"] == [1.0, 5.0]
    # dot without rank_bias ranks by the movie bias (store.py's definition)
    np.testing.assert_array_equal(artifact.tensors["rank_bias"], tensors["movie_bias"])
    # what is on disk is left as written
    on_disk = store.read_manifest(version)
    assert "data_snapshot" not in on_disk and on_disk["rating_scale"] == {"min": 1, "max": 5}

    current = store.publish(tensors, {**manifest, "data": {"max_rated_at": 1}, "data_snapshot": {"max_rated_at": 2}})
    assert store.load(current).manifest["data_snapshot"] == {"max_rated_at": 2}
    assert store.load(current).manifest["rating_scale"] == [0.5, 5.0]
    unreadable = store.load(store.publish(tensors, {**manifest, "rating_scale": "stars"})).manifest
    assert unreadable["rating_scale"] is None and unreadable["data_snapshot"] is None


def test_load_refuses_a_non_numeric_rating_scale(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    tensors, manifest = make_model()
    version = store.publish(tensors, {**manifest, "rating_scale": {"min": "low", "max": 5}})
    with pytest.raises(CorruptModelError, match="rating_scale"):
        store.load(version)


def test_nn_version_without_rank_bias_loads_with_zero_rank_bias(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    tensors, manifest = make_model(k=2)
    tensors["mlp.0.weight"] = np.ones((3, 4), dtype=np.float32)
    tensors["mlp.0.bias"] = np.zeros(3, dtype=np.float32)
    tensors["mlp.1.weight"] = np.ones((1, 3), dtype=np.float32)
    tensors["mlp.1.bias"] = np.zeros(1, dtype=np.float32)
    artifact = store.load(store.publish(tensors, {**manifest, "kind": "nn"}))
    np.testing.assert_array_equal(artifact.tensors["rank_bias"], np.zeros(7, dtype=np.float32))
    assert not artifact.tensors["rank_bias"].flags.writeable


def test_load_maps_the_weights_file_read_only_with_the_derived_tensors(tmp_path: Path) -> None:
    """Workers share one model: the tensors are views of a read-only memory map of the version's file (the
    page cache), not copies; the movies' norms are written at publish time and mapped like the rest."""
    import mmap

    from safetensors.numpy import load_file

    store = ModelStore(tmp_path)
    tensors, manifest = make_model(n_movies=9)
    store.publish(tensors, manifest)
    artifact = store.load()
    on_disk = load_file(str(tmp_path / "1" / "model.safetensors"))
    np.testing.assert_allclose(on_disk["movie_norm"], np.linalg.norm(tensors["movie_factors"], axis=1), rtol=1e-6)
    for name in ("user_factors", "movie_factors", "movie_norm", "user_ids"):
        array = artifact.tensors[name]
        assert not array.flags.writeable
        base = array
        while isinstance(base, np.ndarray) and base.base is not None:
            base = base.base
        assert isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap), name
        np.testing.assert_array_equal(array, on_disk[name])


def test_a_version_without_derived_tensors_gets_them_at_load(tmp_path: Path) -> None:
    """Versions published before derived tensors existed still load, with the norms computed in memory."""
    from safetensors.numpy import save_file

    from movierec.store import sha256_file

    store = ModelStore(tmp_path)
    tensors, manifest = make_model()
    store.publish(tensors, manifest)
    weights = tmp_path / "1" / "model.safetensors"
    save_file(tensors, str(weights))  # as an older publisher wrote it: no movie_norm
    meta = json.loads((tmp_path / "1" / "manifest.json").read_text())
    meta["weights_sha256"] = sha256_file(weights)
    (tmp_path / "1" / "manifest.json").write_text(json.dumps(meta))
    norm = store.load().tensors["movie_norm"]
    np.testing.assert_allclose(norm, np.linalg.norm(tensors["movie_factors"], axis=1), rtol=1e-6)


@pytest.mark.parametrize("header", [
    {"user_ids": {"dtype": "I64", "shape": [5], "data_offsets": [0, 10**9]}},  # past the end of the file
    {"user_ids": {"dtype": "I64", "shape": [5], "data_offsets": [0, 8]}},  # too short for its shape
    {"user_ids": {"dtype": "X9", "shape": [1], "data_offsets": [0, 8]}},  # unknown dtype
    {"user_ids": {"dtype": "I64", "shape": [-1], "data_offsets": [0, 8]}},
    ["not", "an", "object"],
])
def test_malformed_weights_header_is_refused_as_corrupt(tmp_path: Path, header: object) -> None:
    from movierec.store import map_safetensors

    raw = json.dumps(header).encode()
    path = tmp_path / "w.safetensors"
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + bytes(64))
    with pytest.raises(CorruptModelError, match="unreadable"):
        map_safetensors(path, "unreadable")
