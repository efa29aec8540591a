"""Replay MovieLens 100K's later ratings as live traffic against a running server, two versions 50/50.

The ratings are split in time per user: each user's earliest 80 % are the database the models are
trained on, their latest 20 % are "the future" (the trainer's "latest" protocol). Each user with ratings on both sides asks ``GET /recommend`` once
(in the order of their first later rating) and then rates, through ``POST /ratings``, what their
real later history says. Two model versions serve the traffic, split 50/50 by the candidate
pointer (``movierec models candidate N --share 0.5``), and every answer is recorded as an
impression. At the end ``GET /model/online`` says which version's answers got rated more (hit rate
at 10, with its z-test), and that order is compared with the offline NDCG@10 of both versions on
the same later ratings (the standard offline protocol: rank every movie the user had not rated,
a later-rated movie is relevant).

``python -m bench.replay`` builds everything in ``var/bench-replay/`` (database of the earlier
ratings, two versions trained by ``movierec train``: the default recipe and a deliberately weak
one), starts ``movierec serve``, replays, prints the figures and writes
``bench/results/replay.{md,json}``. ``--prepare-only`` builds the database and the versions and
prints how to serve them; ``--url`` then replays against that server (its database must hold the
earlier ratings only, or the later ones are already rated and can never be recommended).
The functions below take an ``httpx.Client`` (the test drives them through a TestClient).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

#: The later share of the ratings (by time) replayed as traffic.
LATE_FRACTION = 0.2
K = 10
ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "var" / "bench-replay"


@dataclass(frozen=True)
class Traffic:
    """Who asks, in which order, and what they rate afterwards: ``(user, [(movie, rating), ...])``."""

    users: list[tuple[int, list[tuple[int, float]]]]

    @property
    def ratings(self) -> int:
        return sum(len(r) for _, r in self.users)


def latest_split(ratings: np.ndarray, late_fraction: float = LATE_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """``(early, late)`` rows ``(user, movie, rating, time)``: each user's latest ``late_fraction`` of
    ratings (at least one, never all) are the later ones -- the trainer's "latest" protocol."""
    order = np.lexsort((ratings[:, 1], ratings[:, 3], ratings[:, 0]))  # by user, then time (ties: movie)
    users = ratings[order, 0]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    counts = np.diff(np.r_[starts, len(users)])
    late_counts = np.minimum(np.maximum(1, np.ceil(counts * late_fraction).astype(np.int64)), counts - 1)
    rank = np.arange(len(users)) - np.repeat(starts, counts)
    is_late = rank >= np.repeat(counts - late_counts, counts)
    return ratings[order[~is_late]], ratings[order[is_late]]


def traffic(early: np.ndarray, late: np.ndarray) -> Traffic:
    """Users with ratings on both sides, ordered by their first later rating, with their later ratings."""
    known = set(early[:, 0].astype(int).tolist())
    by_user: dict[int, list[tuple[float, int, float]]] = {}
    for user, movie, rating, at in late.tolist():
        if int(user) in known:
            by_user.setdefault(int(user), []).append((at, int(movie), float(rating)))
    ordered = sorted(by_user.items(), key=lambda kv: min(t for t, _, _ in kv[1]))
    return Traffic([(user, [(m, r) for _, m, r in sorted(rows)]) for user, rows in ordered])


def offline_metrics(store_root: Path, version: int, early: np.ndarray, plan: Traffic, k: int = K) -> dict[str, float]:
    """NDCG@k and hit rate at k of ``version`` on the later ratings of the replayed users.

    Every movie of the model the user had not rated earlier is ranked by the served ranking score
    (:meth:`app.scoring.LoadedModel.rank_scores`); a movie rated later is relevant (gain 1).
    """
    from app.scoring import LoadedModel
    from movierec.store import ModelStore

    model = LoadedModel(ModelStore(store_root).load(version))
    seen: dict[int, set[int]] = {}
    for user, movie in early[:, :2].astype(int).tolist():
        seen.setdefault(user, set()).add(movie)
    discounts = 1 / np.log2(np.arange(2, k + 2))
    ndcgs, hits = [], []
    for user, rated in plan.users:
        row = model.user_row(user)
        if row is None:
            continue
        scores = model.rank_scores(model.trained_user(row)).astype(np.float64)
        rows, found = model.movie_rows(np.fromiter(seen.get(user, ()), dtype=np.int64))
        scores[rows[found]] = -np.inf
        top = np.argsort(-scores, kind="stable")[:k]
        relevant = {m for m, _ in rated}
        gains = np.array([int(model.movie_ids[r]) in relevant for r in top], dtype=np.float64)
        ideal = discounts[: min(k, len(relevant))].sum()
        ndcgs.append(float(gains @ discounts / ideal))
        hits.append(float(gains.any()))
    return {"ndcg@10": float(np.mean(ndcgs)) if ndcgs else math.nan,
            "hit_rate@10": float(np.mean(hits)) if hits else math.nan, "users": len(ndcgs)}


def replay(client: httpx.Client, plan: Traffic, api_key: str | None = None, n: int = K,
           progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Ask for recommendations, then rate what the history says, user after user; count who served whom."""
    headers = {"X-API-Key": api_key} if api_key else {}
    served: dict[str, int] = {}
    failures = 0
    for i, (user, rated) in enumerate(plan.users):
        answer = client.get("/recommend", params={"user_id": user, "n": n})
        if answer.status_code != 200:
            failures += 1
            continue
        body = answer.json()
        key = f"{body['model_version']} ({body['served_by']})"
        served[key] = served.get(key, 0) + 1
        stored = client.post("/ratings", headers=headers,
                             json=[{"user_id": user, "movie_id": m, "rating": r} for m, r in rated])
        failures += stored.status_code != 201
        if progress is not None and (i + 1) % 100 == 0:
            progress(i + 1, len(plan.users))
    return {"users": len(plan.users), "served": served, "failures": failures}


def wait_recorded(client: httpx.Client, since: int, expected: int, timeout: float = 60.0) -> dict[str, Any]:
    """The online report once the server has written ``expected`` impressions since ``since``."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get("/model/online", params={"since": since})
        response.raise_for_status()
        report = response.json()
        if sum(v["impressions"] for v in report["versions"]) >= expected or time.monotonic() > deadline:
            return report
        time.sleep(0.25)


def verdict(offline: dict[int, dict[str, float]], report: dict[str, Any]) -> dict[str, Any]:
    """Do the online hit rates order the versions as the offline NDCG@10 does?"""
    online = {v["model_version"]: v["hit_rate"]["value"] for v in report["versions"] if v["model_version"] in offline}
    by_ndcg = sorted(offline, key=lambda v: -offline[v]["ndcg@10"])
    by_online = sorted(online, key=lambda v: -(online[v] or 0.0))
    test = (report.get("comparison") or {}).get("hit_rate")
    return {"offline_order": by_ndcg, "online_order": by_online, "agree": by_ndcg == by_online,
            "significant": bool(test and test["significant"]), "test": test}


# -- the full run ------------------------------------------------------------------------------


def _movierec(*args: str, env: dict[str, str], log: Path) -> None:
    with log.open("a") as fh:
        fh.write(f"$ movierec {' '.join(args)}\n")
        fh.flush()
        subprocess.run([sys.executable, "-c", "from cli import main; main()", *args], cwd=ROOT, env=env,
                       stdout=fh, stderr=subprocess.STDOUT, check=True)


def _load_ml100k() -> tuple[np.ndarray, Path]:
    from bench.common import ml100k_dir

    folder, _ = ml100k_dir()
    data = np.loadtxt(folder / "u.data", dtype=np.int64)
    return data, folder


def _prepare(work: Path, env: dict[str, str], log: Path, early: np.ndarray, folder: Path,
             weak: list[str]) -> tuple[int, int]:
    """Database of the earlier ratings and two versions: ``(strong, weak)``, strong current, weak candidate."""
    from sqlalchemy import insert

    from movierec.data.movielens import read_movies
    from movierec.db.engine import make_engine
    from movierec.db.schema import Movie, Rating
    from movierec.store import ModelStore

    _movierec("db", "upgrade", env=env, log=log)
    engine = make_engine(env["MOVIEREC_DATABASE_URL"])
    with engine.begin() as conn:
        conn.execute(insert(Movie), [{"id": m.id, "title": m.title, "year": m.year, "genres": m.genres}
                                     for m in read_movies(folder / "u.item")])
        conn.execute(insert(Rating), [{"user_id": u, "movie_id": m, "rating": float(r), "rated_at": t}
                                      for u, m, r, t in early.tolist()])
    engine.dispose()
    _movierec("train", "--force", *weak, env=env, log=log)
    _movierec("train", "--force", env=env, log=log)
    store = ModelStore(Path(env["MOVIEREC_MODEL_STORE"]))
    weak_version, strong_version = store.versions()[-2:]
    store.set_current(strong_version)
    store.set_candidate(weak_version, 0.5, salt="replay")
    return strong_version, weak_version


def render(result: dict[str, Any]) -> str:
    """The replay's figures as Markdown."""
    rows = []
    for v in result["report"]["versions"]:
        off = result["offline"].get(str(v["model_version"])) or result["offline"].get(v["model_version"]) or {}
        hr = v["hit_rate"]
        rows.append(f"| {v['model_version']} | {off.get('role', '')} | {off.get('ndcg@10', math.nan):.4f} | "
                    f"{off.get('hit_rate@10', math.nan):.4f} | {v['impressions']} | "
                    f"{hr['value']:.4f} [{hr['low']:.4f}, {hr['high']:.4f}] | "
                    f"{v['mean_rating']['value'] or math.nan:.2f} | {100 * (v['coverage'] or 0):.1f} % |")
    test = result["verdict"]["test"] or {}
    return "\n".join([
        "# Replay: MovieLens 100K's later ratings as live traffic, two versions 50/50", "",
        f"{result['plan']['users']} users (their latest {100 * LATE_FRACTION:g} % of ratings by time, "
        f"{result['plan']['ratings']} ratings in all, replayed) each asked `GET /recommend?n=10` once, then "
        "rated their real later movies through `POST /ratings`. Strong: `movierec train` defaults; weak: "
        f"`movierec train {' '.join(result['weak_args'])}`; both trained on the earlier ratings only.", "",
        "| version | recipe | offline NDCG@10 | offline hit rate@10 | answers | online hit rate@10 [95 % CI] | "
        "mean rating of hits | coverage |",
        "|---|---|---|---|---|---|---|---|", *rows, "",
        f"Online order {result['verdict']['online_order']} vs offline NDCG order {result['verdict']['offline_order']}: "
        f"{'the same' if result['verdict']['agree'] else 'DIFFERENT'}; two-proportion z = {test.get('z', math.nan):.2f}, "
        f"p = {test.get('p_value', math.nan):.3g} ({'significant' if result['verdict']['significant'] else 'not significant'}"
        " at 5 %).", "",
        f"Run: {result['seconds']:.0f} s, load average (1 min) {result['load']:.1f} at the end.", ""])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", help="replay against this running server (prepared by you) instead of building one")
    ap.add_argument("--api-key", default=os.environ.get("MOVIEREC_API_KEY") or None)
    ap.add_argument("--weak", default="--rank-weight 0",
                    help="training options of the weak version (default: rating loss only, no ranking term)")
    ap.add_argument("--users", type=int, default=0, help="replay only the first N users (0: all)")
    ap.add_argument("--save", default="replay", help="results go to bench/results/SAVE.{md,json} (full runs only)")
    ap.add_argument("--prepare-only", action="store_true",
                    help="build the database and the two versions in var/bench-replay, print how to serve them "
                         "and replay with --url, and stop")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    data, folder = _load_ml100k()
    early, late = latest_split(data)
    plan = traffic(early, late)
    if args.users:
        plan = Traffic(plan.users[: args.users])
    weak_args = args.weak.split()
    log = WORK / "replay.log"
    server = None
    if args.url:
        base, store_root = args.url, Path(os.environ.get("MOVIEREC_MODEL_STORE", "var/models"))
        from movierec.store import ModelStore

        store = ModelStore(store_root)
        candidate = store.candidate()
        if candidate is None:
            raise SystemExit("the server's store has no candidate: `movierec models candidate N --share 0.5` first")
        roles = {store.current_version(): "current", candidate.version: "candidate"}
    else:
        shutil.rmtree(WORK, ignore_errors=True)
        WORK.mkdir(parents=True)
        store_root = WORK / "models"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "MOVIEREC_DATABASE_URL": f"sqlite:///{WORK / 'replay.db'}",
               "MOVIEREC_MODEL_STORE": str(store_root), "MOVIEREC_API_KEY": "", "MOVIEREC_LOG_LEVEL": "WARNING"}
        print("preparing: database of the earlier ratings, two versions ...", flush=True)
        strong, weak = _prepare(WORK, env, log, early, folder, weak_args)
        roles = {strong: "strong (current)", weak: "weak (candidate)"}
        if args.prepare_only:
            settings = f"MOVIEREC_DATABASE_URL={env['MOVIEREC_DATABASE_URL']} MOVIEREC_MODEL_STORE={store_root}"
            print(f"version {strong} (strong) is current, version {weak} (weak) the candidate for 50 % of users.\n"
                  f"serve:  {settings} movierec serve --port 8000\n"
                  f"replay: {settings} python -m bench.replay --url http://127.0.0.1:8000")
            return
        from bench.serving import Server

        server = Server([sys.executable, "-c", "from cli import main; main()", "serve", "--host", "127.0.0.1",
                         "--workers", "1"], env, log, "/ready").__enter__()
        base = server.url
    try:
        offline = {v: {**offline_metrics(store_root, v, early, plan), "role": role} for v, role in roles.items()}
        since = int(time.time()) - 1
        with httpx.Client(base_url=base, timeout=30) as client:
            print(f"replaying {len(plan.users)} users against {base} ...", flush=True)
            played = replay(client, plan, args.api_key, progress=lambda i, n: print(f"  {i}/{n}", flush=True))
            report = wait_recorded(client, since, played["users"] - played["failures"])
    finally:
        if server is not None:
            server.__exit__(None, None, None)
    result = {"plan": {"users": len(plan.users), "ratings": plan.ratings}, "played": played,
              "offline": {str(v): m for v, m in offline.items()}, "report": report,
              "verdict": verdict(offline, report), "weak_args": weak_args,
              "seconds": time.perf_counter() - started, "load": os.getloadavg()[0]}
    text = render(result)
    print(text)
    if not args.url and not args.users:
        results = ROOT / "bench" / "results"
        (results / f"{args.save}.md").write_text(text)
        (results / f"{args.save}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    if not result["verdict"]["agree"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
