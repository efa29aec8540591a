"""Corrupt model versions: the store refuses every one, and a running API keeps serving the old model.

The corruptions (tests/reliability/corruption.py) cover truncated and bit-flipped weights, a
manifest that disagrees with its tensors (with the sha256 made consistent, so only validation can
tell), NaN weights, a hostile safetensors header, pickles where safetensors belong or beside them,
and files or whole versions that are symlinks out of the store.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import httpx
import pytest

from movierec.store import CURRENT_FILE, ModelStore, StoreError

from .conftest import API_KEY, N_MOVIES, N_USERS, Stack
from .corruption import CORRUPTIONS
from .harness import publish_synthetic, record, running_server, synthetic_model

KEY = {"X-API-Key": API_KEY}


def _set_current(store: Path, version: int) -> None:
    tmp = store / f".tmp-test-current-{os.getpid()}"
    tmp.write_text(f"{version}\n")
    os.replace(tmp, store / CURRENT_FILE)


def install_corrupt_version(store: Path, name: str, outside: Path, make_current: bool = True) -> int:
    """Publish a valid version in a staging copy of ``store``, damage it, rename it into ``store``."""
    staging = outside / f"staging-{time.monotonic_ns()}"
    staging.mkdir(parents=True)
    live = ModelStore(store)
    for version in live.versions():
        # Only the numbers matter: empty placeholders make the staging store pick the next number.
        (staging / str(version)).mkdir()
    tensors, manifest = synthetic_model(n_users=N_USERS, n_movies=N_MOVIES, seed=1000 + len(live.versions()))
    version = ModelStore(staging).publish(tensors, manifest)
    CORRUPTIONS[name](staging / str(version), outside)
    os.rename(staging / str(version), store / str(version))
    shutil.rmtree(staging)
    if make_current:
        _set_current(store, version)
    return version


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_store_refuses_corrupt_version_and_rolls_back(tmp_path: Path, name: str) -> None:
    store_root, outside = tmp_path / "models", tmp_path / "outside"
    outside.mkdir()
    good = publish_synthetic(store_root, n_users=N_USERS, n_movies=N_MOVIES)
    bad = install_corrupt_version(store_root, name, outside)
    store = ModelStore(store_root)

    if bad in store.versions():
        with pytest.raises(StoreError):
            store.load(bad)
        with pytest.raises(StoreError):
            store.load()  # the current one is the damaged one
        assert store.rollback() == good
    else:  # a symlinked version directory is not a version at all
        assert name == "version dir symlinked outside the store"
    assert store.current_version() == good
    assert store.load().version == good
    assert not (outside / "PICKLE_EXECUTED").exists(), "a pickle in the model store was executed"
    if bad in store.versions():
        # The next publish skips the damaged number and is served normally.
        nxt = publish_synthetic(store_root, n_users=N_USERS, n_movies=N_MOVIES, seed=7)
        assert nxt > bad and store.load().version == nxt
    record("model store", f"load a corrupt version ({name})", 1, "refused, rollback to the good version")


@pytest.mark.parametrize("stray", ["symlink", "file", "non-ASCII digit dir"])
def test_publish_succeeds_past_a_stray_numbered_entry(tmp_path: Path, stray: str) -> None:
    """An entry with a numeric name that is not a version (a symlink the store refuses, a stray file,
    a directory named with a non-ASCII digit such as '²') must neither break reading the store nor
    block every later publish (the trainer would fail forever with "store unchanged")."""
    store_root = tmp_path / "models"
    assert publish_synthetic(store_root, n_users=N_USERS, n_movies=N_MOVIES) == 1
    if stray == "symlink":
        (tmp_path / "elsewhere").mkdir()
        (store_root / "2").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    elif stray == "file":
        (store_root / "2").write_text("not a version")
    else:
        (store_root / "\u00b2").mkdir()  # '²'.isdigit() is True, int('²') raises
    assert ModelStore(store_root).versions() == [1]
    version = publish_synthetic(store_root, n_users=N_USERS, n_movies=N_MOVIES, seed=3)
    assert version >= 2 and ModelStore(store_root).load().version == version


def _served_version(url: str) -> int:
    return httpx.get(url + "/model", timeout=10).json()["version"]


def test_running_api_refuses_each_corrupt_version_and_keeps_serving(stack: Stack, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    with running_server(stack.env, stack.workdir) as server:
        server.wait_for("/ready")
        good = _served_version(server.url)
        refused = 0
        for name in CORRUPTIONS:
            bad = install_corrupt_version(stack.store, name, outside)
            time.sleep(0.3)  # more than one poll interval (0.2 s): the poller has seen it
            reload = httpx.post(server.url + "/admin/reload", headers=KEY, timeout=30)
            assert reload.status_code == 200, (name, reload.text)
            body = reload.json()
            assert body["version"] == good and body["changed"] is False, (name, body)
            if bad in ModelStore(stack.store).versions():
                assert body["error"] and f"{bad}" in body["error"], (name, body)
                assert "Traceback" not in body["error"]
                refused += 1
            assert _served_version(server.url) == good, name
            assert httpx.get(server.url + "/ready", timeout=10).status_code == 200, name
            predict = httpx.get(server.url + "/predict", params={"user_id": 3, "movie_id": 5}, timeout=10)
            assert predict.status_code == 200 and predict.json()["model_version"] == good, (name, predict.text)
            assert not (outside / "PICKLE_EXECUTED").exists(), f"{name}: a pickle was executed"
        assert server.proc is not None and server.proc.poll() is None, "the server died"
        # After all that, a good version is still picked up by the poller on its own. (The symlinked
        # "version" is removed first: it blocks publishing, which the stray-entry test shows.)
        for entry in stack.store.iterdir():
            if entry.is_symlink():
                entry.unlink()
        new = publish_synthetic(stack.store, n_users=N_USERS, n_movies=N_MOVIES, seed=5)
        deadline = time.monotonic() + 15
        while _served_version(server.url) != new:
            assert time.monotonic() < deadline, f"version {new} not served within 15 s:\n{server.log()}"
            time.sleep(0.1)
    record("model store + API", "corrupt version published while serving (all kinds in turn)", len(CORRUPTIONS),
           f"{refused} refused with the reason (the symlinked version dir is not even listed), old version kept "
           "serving; next good version picked up by itself")


def test_restart_with_corrupt_current_version_serves_newest_good_one(stack: Stack, tmp_path: Path) -> None:
    """A process (re)started while CURRENT names a damaged version must still serve a model.

    The old version is intact on disk; refusing the damaged one must not leave the service
    without any model (503 on /ready until someone repairs the store by hand).
    """
    outside = tmp_path / "outside"
    outside.mkdir()
    good = ModelStore(stack.store).current_version()
    install_corrupt_version(stack.store, "truncated to half", outside)
    with running_server(stack.env, stack.workdir) as server:
        deadline = time.monotonic() + 10
        ready = httpx.get(server.url + "/ready", timeout=10)
        while ready.status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
            ready = httpx.get(server.url + "/ready", timeout=10)
        assert ready.status_code == 200, f"no model served after a restart with a damaged current version: {ready.text}"
        assert ready.json()["model_version"] == good
    record("model store + API", "restart while the current version is corrupt", 1,
           "newest intact version served")
