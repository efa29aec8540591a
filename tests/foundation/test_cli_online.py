"""`movierec models candidate/promote` and `movierec report online`, run as a user runs them."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from sqlalchemy import insert

from movierec.db.engine import make_engine
from movierec.db.schema import Impression, Movie, Rating, pack_movies
from movierec.store import ModelStore

from .test_cli import movierec_cmd
from .test_store import make_model


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOVIEREC_")}
    env.update(MOVIEREC_DATABASE_URL=f"sqlite:///{tmp_path / 'm.db'}", MOVIEREC_MODEL_STORE=str(tmp_path / "models"),
               MOVIEREC_LOG_LEVEL="WARNING")
    return env


def test_candidate_promote_clear(tmp_path: Path) -> None:
    env = _env(tmp_path)
    store = ModelStore(tmp_path / "models")
    for seed in range(3):
        store.publish(*make_model(seed=seed))
    store.set_current(1)
    assert movierec_cmd("models", "candidate", env=env, cwd=tmp_path).returncode == 1  # none yet
    set_ = movierec_cmd("models", "candidate", "2", "--share", "0.1", env=env, cwd=tmp_path)
    assert set_.returncode == 0 and "version 2 serves 10 % of users" in set_.stdout
    shown = movierec_cmd("models", "candidate", env=env, cwd=tmp_path)
    assert json.loads(shown.stdout)["version"] == 2
    assert any(line.startswith("c    2") for line in movierec_cmd("models", "list", env=env, cwd=tmp_path)
               .stdout.splitlines())
    bad = movierec_cmd("models", "candidate", "9", env=env, cwd=tmp_path)
    assert bad.returncode == 1 and bad.stderr.startswith("error:")
    assert movierec_cmd("models", "candidate", "2", "--share", "2", env=env, cwd=tmp_path).returncode != 0
    promoted = movierec_cmd("models", "promote", env=env, cwd=tmp_path)
    assert promoted.returncode == 0 and store.current_version() == 2 and store.candidate() is None
    store.set_candidate(3, 0.5)
    cleared = movierec_cmd("models", "candidate", "--clear", env=env, cwd=tmp_path)
    assert "cleared" in cleared.stdout and store.candidate() is None


def test_candidate_refuses_a_version_forced_past_the_gate(tmp_path: Path) -> None:
    env = _env(tmp_path)
    store = ModelStore(tmp_path / "models")
    store.publish(*make_model(seed=0))
    tensors, manifest = make_model(seed=1)
    store.publish(tensors, {**manifest, "gate": {"passed": False, "reason": "ndcg@10 worse", "forced": True}})
    store.set_current(1)
    refused = movierec_cmd("models", "candidate", "2", env=env, cwd=tmp_path)
    assert refused.returncode == 1 and "quality gate" in refused.stderr and store.candidate() is None
    assert movierec_cmd("models", "candidate", "2", "--force", env=env, cwd=tmp_path).returncode == 0


def test_report_online(tmp_path: Path) -> None:
    env = _env(tmp_path)
    assert movierec_cmd("db", "upgrade", env=env, cwd=tmp_path).returncode == 0
    empty = movierec_cmd("report", "online", env=env, cwd=tmp_path)
    assert empty.returncode == 0 and "no recorded answers" in empty.stdout
    engine = make_engine(env["MOVIEREC_DATABASE_URL"])
    now = int(time.time())
    with engine.begin() as conn:
        conn.execute(insert(Movie), [{"id": m, "title": f"M{m}", "genres": ""} for m in range(1, 5)])
        conn.execute(insert(Impression), [
            {"request_id": f"r{u}", "user_id": u, "model_version": 1 + u % 2, "source": "model",
             "endpoint": "recommend", "created_at": now - 100, "movies": pack_movies([1])} for u in range(1, 9)])
        conn.execute(insert(Rating), [{"user_id": u, "movie_id": 1, "rating": 4.0, "rated_at": now - 50}
                                      for u in (1, 3, 5, 2)])
    engine.dispose()
    out = movierec_cmd("report", "online", "--json", env=env, cwd=tmp_path)
    report = json.loads(out.stdout)
    by_version = {v["model_version"]: v for v in report["versions"]}
    assert by_version[2]["hit_rate"]["value"] == 0.75 and by_version[1]["hit_rate"]["value"] == 0.25
    text = movierec_cmd("report", "online", env=env, cwd=tmp_path).stdout
    assert "hit rate, version 1 - version 2: -50.00 points" in text
    assert movierec_cmd("report", "online", "--compare", "1", env=env, cwd=tmp_path).returncode == 1
