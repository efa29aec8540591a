"""The replay at small size: later ratings as traffic, two versions 50/50, online order = offline order."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from bench.replay import Traffic, latest_split, offline_metrics, replay, traffic, verdict, wait_recorded
from movierec.store import ModelStore

from .conftest import MODEL_MOVIES, MODEL_USERS
from .helpers import publish_dot, random_dot_tensors


def _later_ratings(seed: int) -> np.ndarray:
    """What each user rates later: the 3 movies the 'true' model (seed) ranks best among those unrated."""
    tensors = random_dot_tensors(MODEL_USERS, MODEL_MOVIES, seed=seed)
    rows = []
    for i, user in enumerate(MODEL_USERS):
        seen = {(user + j) % 25 + 1 for j in range(5)}  # the seeded fixture's ratings
        scores = tensors["movie_factors"] @ tensors["user_factors"][i] + tensors["rank_bias"]
        order = [int(tensors["movie_ids"][r]) for r in np.argsort(-scores) if int(tensors["movie_ids"][r]) not in seen]
        rows += [(user, movie, 4.0, 2000 + user) for movie in order[:3]]
    return np.asarray(rows, dtype=np.int64)


def test_latest_split_and_traffic() -> None:
    ratings = np.array([[1, 3, 4, 40], [1, 1, 4, 10], [2, 1, 5, 30], [1, 2, 3, 20], [3, 2, 2, 50], [2, 4, 1, 5],
                        [1, 4, 2, 45], [1, 5, 5, 46], [1, 6, 5, 47]])
    early, late = latest_split(ratings, late_fraction=0.4)
    # user 1: 6 ratings, the latest 3 (ceil of 2.4) are later; user 2: 2 ratings, the latest one;
    # user 3: one rating, never all of it.
    assert sorted(map(tuple, late.tolist())) == [(1, 4, 2, 45), (1, 5, 5, 46), (1, 6, 5, 47), (2, 1, 5, 30)]
    assert len(early) == len(ratings) - 4
    plan = traffic(early, late)
    assert plan.users == [(2, [(1, 5.0)]), (1, [(4, 2.0), (5, 5.0), (6, 5.0)])]  # by first later rating


def test_replay_ranks_versions_as_offline_ndcg(seeded: Engine, store: Path,
                                               make_client: Callable[..., TestClient]) -> None:
    publish_dot(store, MODEL_USERS, MODEL_MOVIES, seed=1)  # v1: the taste the users have
    publish_dot(store, MODEL_USERS, MODEL_MOVIES, seed=2)  # v2: another taste
    models = ModelStore(store)
    models.set_current(1)
    models.set_candidate(2, 0.5, salt="replay")
    early = np.array([[u, (u + j) % 25 + 1, 3, 500 + j] for u in MODEL_USERS for j in range(5)], dtype=np.int64)
    late = _later_ratings(seed=1)
    plan = traffic(early, late)
    assert len(plan.users) == len(MODEL_USERS)
    offline = {v: offline_metrics(store, v, early, plan) for v in (1, 2)}
    assert offline[1]["ndcg@10"] == 1.0 and offline[2]["ndcg@10"] < 0.7
    client = make_client(impressions_flush_ms=50)
    played = replay(client, plan)
    assert played["failures"] == 0 and set(played["served"]) == {"1 (current)", "2 (candidate)"}
    report = wait_recorded(client, int(time.time()) - 3600, len(plan.users))
    result = verdict(offline, report)
    assert result["offline_order"] == [1, 2] and result["agree"]
    by_version = {v["model_version"]: v for v in report["versions"]}
    assert by_version[1]["hit_rate"]["value"] == 1.0
    assert by_version[1]["impressions"] + by_version[2]["impressions"] == len(MODEL_USERS)


def test_traffic_keeps_only_the_first_users() -> None:
    plan = Traffic([(1, [(2, 4.0)]), (2, [(3, 5.0), (4, 1.0)])])
    assert plan.ratings == 3
