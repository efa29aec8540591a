"""The ANN index of large catalogues: exact filters, exact scores, recall, and verification on load.

The index is forced on small synthetic catalogues (``ann_min_movies=1``, or an :class:`AnnRanker`
built directly) and compared with exact scoring (:class:`LoadedModel`) on the same inputs.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from app.ann import EXACT_ROW_COST, FULL_SCAN_SHARE, AnnRanker, CoarseScan
from app.scoring import LoadedModel, UserVector
from movierec import ann_index
from movierec.store import ModelStore

from .conftest import MODEL_MOVIES, MODEL_USERS
from .helpers import manifest_for, publish_dot, random_dot_tensors


def _model(root: Path, m: int, k: int, seed: int, users: int = 50) -> tuple[LoadedModel, ann_index.AnnIndexes]:
    tensors = random_dot_tensors(range(1, users + 1), range(1, m + 1), k=k, seed=seed)
    store = ModelStore(root)
    version = store.publish(tensors, manifest_for(tensors),
                            extra_files=lambda d: ann_index.write_for_version(d, tensors, "dot"))
    artifact = store.load(version)
    return LoadedModel(artifact), ann_index.load(artifact.path, artifact.manifest, version)


def _users(model: LoadedModel, rng: np.random.Generator) -> list[UserVector]:
    """A trained user, the baseline (zero factors: bias only) and a vector unlike any trained one."""
    odd = UserVector(rng.normal(size=model.k).astype(np.float32) * 3, 0.0, "fold_in")
    return [model.trained_user(int(rng.integers(len(model.user_ids)))), model.baseline_user(), odd]


def _check(rows: np.ndarray, scores: np.ndarray, exact_scores: np.ndarray, allowed: np.ndarray, n: int,
           probe_all: bool) -> None:
    """What every answer must satisfy, compared with exact scoring of the same question."""
    assert rows.size == min(n, int(allowed.sum()))  # never fewer than n when n exist
    assert np.unique(rows).size == rows.size
    assert allowed[rows].all()  # never an excluded or filtered movie
    np.testing.assert_allclose(scores, exact_scores[rows], rtol=1e-5, atol=1e-5)  # exact scores
    assert np.all(np.diff(scores) <= 1e-6)  # best first
    if probe_all:  # every list probed: the answer is the exact one
        best = np.sort(exact_scores[allowed])[::-1][: rows.size]
        np.testing.assert_allclose(scores, best, rtol=1e-5, atol=1e-5)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(m=st.integers(20, 600), k=st.integers(2, 8), seed=st.integers(0, 10_000), n=st.integers(1, 40),
       density=st.sampled_from([0.0, 0.003, 0.02, 0.1, 0.5, 0.95, 1.0]), nprobe=st.sampled_from(["tuned", 1, "all"]),
       force_index=st.booleans())
def test_filtered_answers_match_exact_scoring(tmp_path_factory: pytest.TempPathFactory, m: int, k: int, seed: int,
                                              n: int, density: float, nprobe: int | str, force_index: bool) -> None:
    model, indexes = _model(tmp_path_factory.mktemp("ann"), m, k, seed)
    for entry in (indexes.recommend, indexes.similar):
        assert entry is not None
        entry.nprobe = {"tuned": entry.nprobe, "all": entry.nlist}.get(nprobe, nprobe)  # type: ignore[call-overload]
    # force_index: the index path whatever the filter (no exact scoring of a selective filter's rows).
    ranker = AnnRanker(model, indexes, exact_row_cost=math.inf if force_index else EXACT_ROW_COST)
    rng = np.random.default_rng(seed)
    allowed = rng.random(m) < density
    probe_all = nprobe == "all"
    for user in _users(model, rng):
        rows, scores = ranker.top_for_user(user, n, allowed.copy())
        _check(rows, scores, model.rank_scores(user), allowed, n, probe_all)
    row = int(rng.integers(m))
    rows, scores = ranker.similar(row, n, allowed.copy())
    without_itself = allowed.copy()
    without_itself[row] = False
    _check(rows, scores, model.movie_unit @ model.movie_unit[row], without_itself, n, probe_all)


def test_recall_against_exact_scoring_on_users_not_tuned_on(tmp_path: Path) -> None:
    """recall@10 of the tuned index on fresh queries (the build tunes on the trained users)."""
    model, indexes = _model(tmp_path, 20_000, 16, seed=3, users=300)
    ranker = AnnRanker(model, indexes)
    rng = np.random.default_rng(11)
    everything = np.ones(len(model.movie_ids), dtype=bool)
    hits = sims = 0
    for _ in range(100):
        user = UserVector((rng.normal(size=model.k) * 0.5).astype(np.float32), 0.0, "fold_in")
        got, _ = ranker.top_for_user(user, 10, everything.copy())
        want, _ = model.top_for_user(user, 10, everything.copy())
        hits += len(set(got.tolist()) & set(want.tolist()))
        row = int(rng.integers(len(model.movie_ids)))
        got, _ = ranker.similar(row, 10, everything.copy())
        want, _ = model.similar(row, 10, everything.copy())
        sims += len(set(got.tolist()) & set(want.tolist()))
    assert indexes.recommend is not None and indexes.recommend.nprobe < indexes.recommend.nlist  # not a full scan
    assert hits / 1000 >= 0.93
    assert sims / 1000 >= 0.93


class _CountingIndex:
    """A faiss index that counts its searches (faiss's own objects take no new attributes)."""

    def __init__(self, index: object) -> None:
        self.index, self.searches = index, 0
        self.nlist = getattr(index, "nlist", None)

    def search(self, *args: object, **kwargs: object) -> object:
        self.searches += 1
        return self.index.search(*args, **kwargs)  # type: ignore[attr-defined]


@pytest.mark.parametrize("probe_share, through_index", [(0.1, True), (0.4, True), (0.5, False), (1.0, False)])
def test_an_index_that_must_probe_most_of_its_lists_is_bypassed_for_the_full_scan(
        tmp_path: Path, probe_share: float, through_index: bool) -> None:
    """From FULL_SCAN_SHARE of the lists on, the contiguous exact scan is cheaper than the index's:
    the request is scored exactly (same answer), unless a test forces the index (infinite row cost)."""
    model, indexes = _model(tmp_path, 4_000, 8, seed=4)
    rng = np.random.default_rng(2)
    everything = np.ones(len(model.movie_ids), dtype=bool)
    for entry in (indexes.recommend, indexes.similar):
        assert entry is not None and entry.nlist >= 10
        entry.nprobe = max(1, round(probe_share * entry.nlist))
        entry.index = _CountingIndex(entry.index)
    ranker, forced = AnnRanker(model, indexes), AnnRanker(model, indexes, exact_row_cost=math.inf)
    user = model.trained_user(1)
    rows, scores = ranker.top_for_user(user, 10, everything.copy())
    want_rows, want_scores = model.top_for_user(user, 10, everything.copy())
    row = int(rng.integers(len(model.movie_ids)))
    sim_rows, _ = ranker.similar(row, 10, everything.copy())
    counts = [indexes.recommend.index.searches, indexes.similar.index.searches]  # type: ignore[union-attr]
    assert counts == ([1, 1] if through_index else [0, 0])
    if not through_index:  # the exact answer itself
        np.testing.assert_array_equal(rows, want_rows)
        np.testing.assert_allclose(scores, want_scores, rtol=1e-5)
        np.testing.assert_array_equal(sim_rows, model.similar(row, 10, everything.copy())[0])
    forced.top_for_user(user, 10, everything.copy())
    forced.similar(row, 10, everything.copy())
    assert indexes.recommend.index.searches == counts[0] + 1  # type: ignore[union-attr]
    assert indexes.similar.index.searches == counts[1] + 1


@pytest.mark.parametrize("density", [1.0, 0.5, 0.05])
def test_the_coarse_pass_stands_in_for_the_full_scan_with_exact_filters_and_scores(tmp_path: Path,
                                                                                   density: float) -> None:
    """Factors that defeat the index (i.i.d. here, every list probed) are ranked from a quantized copy:
    its candidates rescored exactly, filters honoured, never fewer than n, recall close to exact."""
    model, indexes = _model(tmp_path, 5_000, 16, seed=6)
    assert indexes.recommend is not None
    indexes.recommend.nprobe = indexes.recommend.nlist
    coarse = CoarseScan(model.movie_factors, model.rank_term)
    counted = _CountingIndex(coarse.index)
    coarse.index = counted
    ranker = AnnRanker(model, indexes, coarse=coarse)
    rng = np.random.default_rng(3)
    hits = 0
    users = [model.trained_user(int(i)) for i in rng.integers(len(model.user_ids), size=20)]
    for user in users:
        allowed = rng.random(len(model.movie_ids)) < density
        rows, scores = ranker.top_for_user(user, 10, allowed.copy())
        _check(rows, scores, model.rank_scores(user), allowed, 10, probe_all=False)
        want, _ = model.top_for_user(user, 10, allowed.copy())
        hits += len(set(rows.tolist()) & set(want.tolist()))
    assert counted.searches == len(users)  # the quantized copy answered, not the exact scan
    assert hits / (10 * len(users)) >= 0.9


def test_the_header_binds_the_index_to_its_model(tmp_path: Path) -> None:
    model, indexes = _model(tmp_path, 500, 4, seed=1)
    header = json.loads((tmp_path / "1" / ann_index.HEADER_FILE).read_text())
    assert header["weights_sha256"] == model.manifest["weights_sha256"]
    assert (header["movies"], header["factors"]) == (500, 4)
    assert header["indexes"]["recommend"]["dims"] == 6  # k + bias + the augmentation's coordinate
    assert set(header["indexes"]) == {"recommend", "similar"}
    assert indexes.recommend is not None and indexes.recommend.index.ntotal == 500



@pytest.mark.skipif(ann_index._MMAP_FLAG is None or not Path("/proc/self/maps").exists(),
                    reason="faiss without IO_FLAG_MMAP_IFC, or no /proc")
def test_a_loaded_index_is_a_read_only_map_of_its_file_and_answers_as_built(tmp_path: Path) -> None:
    """Server workers share the index's pages (the page cache) instead of each reading a copy."""
    tensors = random_dot_tensors(range(1, 51), range(1, 3001), k=8, seed=5)
    store = ModelStore(tmp_path)
    built: dict[str, ann_index.AnnIndexes] = {}
    version = store.publish(tensors, manifest_for(tensors), extra_files=lambda d: built.setdefault(
        "it", ann_index.write_for_version(d, tensors, "dot")))
    artifact = store.load(version)
    loaded = ann_index.load(artifact.path, artifact.manifest, version)
    maps = Path("/proc/self/maps").read_text().splitlines()
    for name in ("recommend", "similar"):
        path = str((artifact.path / ann_index.INDEX_FILES[name]).resolve())
        perms = [line.split()[1] for line in maps if line.endswith(path)]
        assert perms and all(p.startswith("r-") for p in perms), (name, perms)  # mapped, never writable
    queries = ann_index.mips_queries(np.random.default_rng(1).normal(size=(20, 8)).astype(np.float32))
    for entry, fresh in ((loaded.recommend, built["it"].recommend), (loaded.similar, built["it"].similar)):
        assert entry is not None and fresh is not None
        q = queries if entry.name == "recommend" else queries[:, :8]
        entry.index.nprobe = fresh.index.nprobe = 3
        np.testing.assert_array_equal(entry.index.search(q, 10)[1], fresh.index.search(q, 10)[1])
    del loaded  # the map lives as long as the index

# -- through the API: used when large enough, verified on load, refused when damaged ------------


def _ann_client(make_client: Callable[..., TestClient], **overrides: object) -> TestClient:
    return make_client(ann_min_movies=1, **overrides)


def test_api_answers_through_the_index_as_exact_scoring_would(seeded: Engine, store: Path,
                                                               make_client: Callable[..., TestClient]) -> None:
    publish_dot(store, MODEL_USERS, MODEL_MOVIES, ann=True)
    exact, ann = make_client(), _ann_client(make_client)
    assert exact.app.state.registry.state.ann is None  # 25 movies: below the default threshold
    ranker = ann.app.state.registry.state.ann
    assert ranker is not None
    rec = ranker.indexes.recommend  # the coarse pass is built where the index would probe half its lists
    assert (ranker.coarse is not None) == (rec.nprobe >= FULL_SCAN_SHARE * rec.nlist)
    for params in ({"user_id": 3, "n": 5}, {"user_id": 4, "n": 50, "genre": "Comedy"},
                   {"user_id": 999, "n": 7, "min_year": 2000}, {"user_id": 5, "n": 3, "exclude": "1,2,3"}):
        want, got = exact.get("/recommend", params=params), ann.get("/recommend", params=params)
        assert got.status_code == want.status_code == 200
        _same_items(got.json()["items"], want.json()["items"])
    for movie_id in (1, 7, 25):
        want = exact.get(f"/movies/{movie_id}/similar", params={"n": 6})
        got = ann.get(f"/movies/{movie_id}/similar", params={"n": 6})
        assert got.status_code == 200
        _same_items(got.json()["items"], want.json()["items"])


def _same_items(got: list[dict[str, object]], want: list[dict[str, object]]) -> None:
    """The same movies in the same order; scores equal up to float32 rounding (a gathered matvec
    sums in another order than the full one)."""
    assert [item["movie_id"] for item in got] == [item["movie_id"] for item in want]
    assert [{**item, "score": None} for item in got] == [{**item, "score": None} for item in want]
    np.testing.assert_allclose([item["score"] for item in got], [item["score"] for item in want], rtol=1e-5)


def test_a_version_without_an_index_gets_one_built_on_load(seeded: Engine, store: Path,
                                                           make_client: Callable[..., TestClient]) -> None:
    publish_dot(store, MODEL_USERS, MODEL_MOVIES)
    client = _ann_client(make_client)
    ranker = client.app.state.registry.state.ann
    assert ranker is not None and ranker.indexes.similar.index.ntotal == len(MODEL_MOVIES)
    assert client.get("/recommend", params={"user_id": 3, "n": 5}).json()["model_version"] == 1


def _damage_flip(version_dir: Path, other: Path) -> None:
    path = version_dir / ann_index.INDEX_FILES["recommend"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _damage_swap(version_dir: Path, other: Path) -> None:
    """The index files and header of another version (other weights), as a bad copy would leave them."""
    for name in (*ann_index.INDEX_FILES.values(), ann_index.HEADER_FILE):
        shutil.copy(other / name, version_dir / name)


def _damage_header(version_dir: Path, other: Path) -> None:
    (version_dir / ann_index.HEADER_FILE).write_text("{not json")


def _damage_missing_file(version_dir: Path, other: Path) -> None:
    (version_dir / ann_index.INDEX_FILES["similar"]).unlink()


@pytest.mark.parametrize("damage, message", [(_damage_flip, "does not match its sha256"),
                                             (_damage_swap, "built for other weights"),
                                             (_damage_header, "unreadable ANN index header"),
                                             (_damage_missing_file, "is missing")])
def test_a_damaged_or_mismatched_index_is_refused_and_the_old_version_keeps_serving(
        seeded: Engine, store: Path, tmp_path: Path, make_client: Callable[..., TestClient],
        damage: Callable[[Path, Path], None], message: str) -> None:
    publish_dot(store, MODEL_USERS, MODEL_MOVIES, seed=1, ann=True)
    client = _ann_client(make_client)
    before = client.get("/recommend", params={"user_id": 3, "n": 5}).json()
    assert before["model_version"] == 1
    publish_dot(store, MODEL_USERS, MODEL_MOVIES, seed=2, ann=True)
    damage(store / "2", store / "1")
    result = client.post("/admin/reload").json()
    assert result["changed"] is False and result["version"] == 1
    assert message in result["error"]
    after = client.get("/recommend", params={"user_id": 3, "n": 5}).json()
    assert after["model_version"] == 1 and after["items"] == before["items"]
    assert client.get("/ready").status_code == 200


def test_a_search_runs_on_one_openmp_thread_in_whatever_thread_asks(tmp_path: Path) -> None:
    """The OpenMP thread count is per thread: a request thread left at the default forks a team of
    spinning workers per search (5x slower than exact scoring on a busy 2-core machine)."""
    import threading

    import faiss

    model, indexes = _model(tmp_path, 300, 4, seed=2)
    ranker = AnnRanker(model, indexes, exact_row_cost=math.inf)
    seen: list[int] = []

    def request() -> None:
        ranker.top_for_user(model.trained_user(0), 5, np.ones(300, dtype=bool))
        seen.append(faiss.omp_get_max_threads())

    thread = threading.Thread(target=request)
    thread.start()
    thread.join()
    assert seen == [1]

