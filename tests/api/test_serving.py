"""The numpy scorer against the formulas of movierec.model_format, without HTTP or a database."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.catalogue import Catalogue
from app.scoring import LoadedModel
from movierec.store import ModelStore

from .helpers import manifest_for, random_dot_tensors


def _load(tmp_path: Path, tensors: dict[str, np.ndarray], kind: str = "dot", **extra: object) -> LoadedModel:
    store = ModelStore(tmp_path / "models")
    version = store.publish(tensors, manifest_for(tensors, kind=kind, **extra))
    return LoadedModel(store.load(version))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def test_dot_prediction_matches_store_formula(tmp_path: Path) -> None:
    t = random_dot_tensors(range(1, 11), range(1, 21), k=6, seed=3)
    model = _load(tmp_path, t)
    users, movies = np.array([0, 3, 9]), np.array([5, 0, 19])
    logit = (t["user_factors"][users] * t["movie_factors"][movies]).sum(1) + t["user_bias"][users] \
        + t["movie_bias"][movies] + 0.3
    expected = np.clip(0 + 5.5 * _sigmoid(logit), 0.5, 5.0)
    got = model.predict(t["user_factors"][users], t["user_bias"][users], movies)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_ranking_uses_rank_bias_and_top_n_is_the_full_sort(tmp_path: Path) -> None:
    t = random_dot_tensors(range(1, 6), range(1, 201), k=4, seed=1)
    model = _load(tmp_path, t)
    user = model.trained_user(2)
    scores = model.rank_scores(user)
    np.testing.assert_allclose(scores, t["movie_factors"] @ t["user_factors"][2] + t["rank_bias"], rtol=1e-5)
    allowed = np.ones(len(model.movie_ids), dtype=bool)
    allowed[[0, 5, 7]] = False
    rows, top = model.top_n(scores, 10, allowed)
    brute = [r for r in np.argsort(-scores) if allowed[r]][:10]
    assert rows.tolist() == brute
    assert np.all(np.diff(top) <= 0)


@settings(max_examples=60, deadline=None)
@given(scale=st.floats(0.0, 30.0), seed=st.integers(0, 10_000), g=st.floats(-20, 20))
def test_predictions_always_on_the_rating_scale(tmp_path_factory: pytest.TempPathFactory, scale: float, seed: int,
                                                g: float) -> None:
    t = random_dot_tensors(range(1, 4), range(1, 6), k=3, seed=seed, scale=scale)
    model = _load(tmp_path_factory.mktemp("m"), t, global_bias=g)
    users = np.repeat(np.arange(3), 5)
    movies = np.tile(np.arange(5), 3)
    got = model.predict(t["user_factors"][users] * scale, t["user_bias"][users] * scale, movies)
    assert np.all(np.isfinite(got)) and np.all(got >= 0.5) and np.all(got <= 5.0)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_fold_in_recovers_planted_factors(tmp_path_factory: pytest.TempPathFactory, seed: int) -> None:
    """Noise-free ratings generated from planted (u, b_u) are solved back with a tiny penalty."""
    k = 5
    t = random_dot_tensors(range(1, 4), range(1, 41), k=k, seed=seed, scale=0.6)
    model = _load(tmp_path_factory.mktemp("m"), t, foldin_l2=1e-6)
    rng = np.random.default_rng(seed)
    u, b = rng.normal(size=k) * 0.5, float(rng.normal() * 0.3)
    rows = rng.choice(40, size=20, replace=False)
    logit = t["movie_factors"][rows] @ u + b + t["movie_bias"][rows] + 0.3
    ratings = 5.5 * _sigmoid(logit)  # continuous, inside (0, 5.5): the logit inverts exactly
    solved = model.fold_in(rows, ratings)
    np.testing.assert_allclose(solved.vec, u, atol=1e-3)
    assert solved.bias == pytest.approx(b, abs=1e-3)
    assert solved.source == "fold_in"


def test_fold_in_prior_is_the_trained_users_distribution(tmp_path: Path) -> None:
    """Without informative ratings a new user lands on the typical trained user, not on zero."""
    t = random_dot_tensors(range(1, 200), range(1, 30), k=4, seed=3, scale=0.1)
    t["user_factors"] += np.array([1.0, -0.5, 0.25, 0.0], dtype=np.float32)  # users share a taste
    model = _load(tmp_path / "a", t)
    np.testing.assert_allclose(model.prior_mean[:4], t["user_factors"].mean(axis=0), atol=1e-5)
    # One rating of a movie whose factors are all zero says (almost) nothing about u: it stays at
    # the typical user (only the weak factor-bias correlation of the sample moves it), far from 0.
    t2 = {**t, "movie_factors": t["movie_factors"].copy()}
    t2["movie_factors"][0] = 0.0
    model2 = _load(tmp_path / "b", t2)
    folded = model2.fold_in(np.array([0]), np.array([3.0]))
    mean = model2.prior_mean[:4]
    assert np.linalg.norm(folded.vec - mean) < 0.1 * np.linalg.norm(mean)
    # Tighter prior (larger precision) for a model whose users vary less.
    wide = _load(tmp_path / "c", random_dot_tensors(range(1, 200), range(1, 9), scale=1.0))
    narrow = _load(tmp_path / "d", random_dot_tensors(range(1, 200), range(1, 9), scale=0.1))
    assert np.trace(narrow.prior_precision) > 10 * np.trace(wide.prior_precision)


def test_similar_is_cosine_nearest_excluding_itself(tmp_path: Path) -> None:
    t = random_dot_tensors(range(1, 3), range(1, 51), k=6, seed=9)
    model = _load(tmp_path, t)
    rows, scores = model.similar(7, 5, np.ones(50, dtype=bool))
    f = t["movie_factors"]
    cos = f @ f[7] / (np.linalg.norm(f, axis=1) * np.linalg.norm(f[7]))
    cos[7] = -np.inf
    assert rows.tolist() == np.argsort(-cos)[:5].tolist()
    np.testing.assert_allclose(scores, cos[rows], rtol=1e-5)


def test_filters_and_catalogue_alignment(tmp_path: Path) -> None:
    t = random_dot_tensors(range(1, 3), range(1, 11), k=2)
    store = ModelStore(tmp_path / "models")
    version = store.publish(t, manifest_for(t))
    # Movie 10 is missing from the database: never recommendable.
    rows = [(i, f"M{i}", 1990 + i, "Comedy|Drama" if i % 2 else "Drama") for i in range(1, 10)]
    catalogue = Catalogue.from_rows(rows).aligned_to(LoadedModel(store.load(version)).movie_ids)
    assert not catalogue.in_catalogue[9] and catalogue.in_catalogue[:9].all()
    comedy = catalogue.allowed_mask(genre="comedy")
    assert np.flatnonzero(comedy).tolist() == [0, 2, 4, 6, 8]
    assert np.flatnonzero(catalogue.allowed_mask(min_year=1997)).tolist() == [6, 7, 8]
    assert not catalogue.allowed_mask(genre="Western").any()


def _nn_tensors(k: int = 4, hidden: int = 6, seed: int = 0, scale: float = 1.0) -> dict[str, np.ndarray]:
    t = random_dot_tensors(range(1, 6), range(1, 21), k=k, seed=seed, rank_bias=False, scale=scale)
    rng = np.random.default_rng(seed + 1)
    t["mlp.0.weight"] = (rng.normal(size=(hidden, 2 * k)) * scale).astype(np.float32)
    t["mlp.0.bias"] = (rng.normal(size=hidden) * scale).astype(np.float32)
    t["mlp.1.weight"] = (rng.normal(size=(1, hidden)) * scale).astype(np.float32)
    t["mlp.1.bias"] = (rng.normal(size=1) * scale).astype(np.float32)
    return t


def test_nn_prediction_and_ranking_match_the_mlp(tmp_path: Path) -> None:
    t = _nn_tensors()
    model = _load(tmp_path, t, kind="nn")
    x = np.concatenate([t["user_factors"][[1, 1, 4]], t["movie_factors"][[0, 3, 19]]], axis=1)
    h = np.maximum(x @ t["mlp.0.weight"].T + t["mlp.0.bias"], 0)
    logit = (h @ t["mlp.1.weight"].T + t["mlp.1.bias"])[:, 0]
    expected = np.clip(5.5 * _sigmoid(logit + 0.3), 0.5, 5.0)
    got = model.predict(t["user_factors"][[1, 1, 4]], np.zeros(3), np.array([0, 3, 19]))
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    scores = model.rank_scores(model.trained_user(1))
    x_all = np.concatenate([np.repeat(t["user_factors"][[1]], 20, 0), t["movie_factors"]], axis=1)
    h_all = np.maximum(x_all @ t["mlp.0.weight"].T + t["mlp.0.bias"], 0)
    np.testing.assert_allclose(scores, (h_all @ t["mlp.1.weight"].T + t["mlp.1.bias"])[:, 0], rtol=1e-4, atol=1e-5)


def test_nn_fold_in_fits_the_ratings_better_than_the_mean_user(tmp_path: Path) -> None:
    t = _nn_tensors(seed=4, k=4, hidden=8, scale=0.7)
    model = _load(tmp_path, t, kind="nn", foldin_l2=1e-3)
    rows = np.arange(12)
    target_user = t["user_factors"][2]
    ratings = model.predict(np.repeat(target_user[None], 12, 0), np.zeros(12), rows)
    solved = model.fold_in(rows, ratings)
    before = model.predict(np.repeat(model.baseline_user().vec[None], 12, 0), np.zeros(12), rows)
    after = model.predict(np.repeat(solved.vec[None], 12, 0), np.zeros(12), rows)
    assert np.abs(after - ratings).mean() < 0.5 * np.abs(before - ratings).mean()


def test_nn_ranking_adds_the_rank_bias_when_the_version_has_one(tmp_path: Path) -> None:
    t = _nn_tensors()
    plain = _load(tmp_path / "plain", t, kind="nn").rank_scores
    t["rank_bias"] = np.linspace(-1, 1, 20).astype(np.float32)
    model = _load(tmp_path / "biased", t, kind="nn")
    user = model.trained_user(1)
    np.testing.assert_allclose(model.rank_scores(user), plain(user) + t["rank_bias"], rtol=1e-5, atol=1e-6)


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 10_000), m=st.sampled_from([50, 8191, 8192, 20_000, 60_001]), n=st.integers(1, 100),
       allowed_share=st.sampled_from([0.0, 0.0005, 0.01, 0.5, 1.0]), distinct=st.sampled_from([3, 50, 0]))
def test_top_n_on_a_large_catalogue_is_the_exact_sort(seed: int, m: int, n: int, allowed_share: float,
                                                     distinct: int) -> None:
    """The sampled threshold of large catalogues never changes the answer: the n best allowed rows, ties by row
    (few distinct scores make ties at the threshold; few allowed rows make it fall back)."""
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=m).astype(np.float32)
    if distinct:
        scores = rng.integers(0, distinct, m).astype(np.float32)
    allowed = rng.random(m) < allowed_share
    rows, top = LoadedModel.top_n(None, scores, n, allowed)  # type: ignore[arg-type]  # uses no model state
    candidates = np.flatnonzero(allowed)
    brute = candidates[np.lexsort((candidates, -scores[candidates]))][:n]
    assert rows.tolist() == brute.tolist()
    np.testing.assert_array_equal(top, scores[brute])


@settings(max_examples=40, deadline=None)
@given(rows=st.lists(st.tuples(st.integers(1, 60), st.text(max_size=12), st.one_of(st.none(), st.integers(1880, 2030)),
                               st.lists(st.sampled_from(["Drama", "drama", "Comedy", "Sci-Fi", "Film-Noir"]), max_size=3)),
                     max_size=40, unique_by=lambda r: r[0]),
       chunk=st.integers(1, 7))
def test_streamed_catalogue_matches_the_rows(rows: list[tuple[int, str, int | None, list[str]]], chunk: int) -> None:
    """The compact catalogue (one title blob, genre offsets, packed genre masks) streamed in chunks gives back
    each row's metadata as stored, and the genre filter is whole-name and case-insensitive."""
    from app.catalogue import ModelCatalogue

    model_ids = np.arange(5, 56, 2, dtype=np.int64)  # some movies of the database are not in the model and back
    ordered = sorted((i, t, y, "|".join(g)) for i, t, y, g in rows)
    catalogue = ModelCatalogue.from_chunks([ordered[i:i + chunk] for i in range(0, len(ordered), chunk)], model_ids)
    by_id = {r[0]: r for r in ordered}
    for row, movie_id in enumerate(model_ids.tolist()):
        if movie_id not in by_id:
            assert not catalogue.in_catalogue[row] and catalogue.titles[row] is None and catalogue.genres[row] == []
            continue
        _, title, year, genres = by_id[movie_id]
        assert catalogue.in_catalogue[row] and catalogue.titles[row] == title and catalogue.year(row) == year
        assert catalogue.genres[row] == [g for g in genres.split("|") if g]
    drama = catalogue.allowed_mask(genre="DRAMA|film-noir")
    expected = [movie_id in by_id and bool({"drama", "film-noir"} & {g.lower() for g in by_id[movie_id][3].split("|")})
                for movie_id in model_ids.tolist()]
    assert drama.tolist() == expected
    with pytest.raises(ValueError, match="increasing"):
        ModelCatalogue.from_chunks([[(9, "b", None, "")], [(7, "a", None, "")]], model_ids)
