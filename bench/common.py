"""Shared pieces of the benchmarks: data, the two split protocols, ONE metric implementation, reporting.

Every system in every benchmark is evaluated by the functions in this module, so the
comparisons differ only in the system, never in the metric code.

Protocols (the ones the trainer uses, see ``trainer/split.py``; :func:`check_splits_match_trainer`
verifies the masks are identical when the trainer is importable):

* ``random``: rows in canonical order (by user index, then movie index), ``round(0.1 * r)`` rows
  held out, chosen by ``numpy.random.default_rng(SPLIT_SEED).permutation``. RMSE and MAE.
* ``latest``: for every user, ratings sorted by (timestamp, movie index) -- ties broken stably
  by movie -- and the latest ``floor(0.2 * count)`` held out. NDCG@10, Recall@10, HR@10.

Ranking metrics (per user with at least one relevant held-out rating, then averaged):

* relevant ``R_u`` = held-out movies the user rated >= 4;
* candidates = every movie of the data set the user did not rate in the training part
  (training movies get ``-inf``);
* top 10 by the system's score (``torch.topk``; same tie handling for every system);
* ``NDCG@10 = DCG/IDCG`` with binary gain and ``1/log2(rank+1)`` discounts,
  ``IDCG`` over ``min(|R_u|, 10)`` ideal hits; ``Recall@10 = hits/|R_u|``; ``HR@10 = [hits > 0]``.

Rating metrics clip every system's prediction to the rating range seen in training (1..5 on
MovieLens 100K), the same for all systems.
"""

from __future__ import annotations

import json

import datetime as _dt
import hashlib
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
RAW = RESULTS / "raw"  # git-ignored: caches, logs, JSON dumps

SPLIT_SEED = 20240531  # the trainer's protocol constant (trainer.split.SPLIT_SEED)
RANDOM_TEST_FRACTION = 0.1
LATEST_TEST_FRACTION = 0.2
RELEVANT_AT = 4.0
K = 10
TRAIN_SEEDS = (1, 2, 3)

if str(ROOT) not in sys.path:  # `python bench/x.py` as well as `python -m bench.x`
    sys.path.insert(0, str(ROOT))


# ---------------------------------------------------------------------------------------- data


@dataclass
class Triples:
    """Ratings with dense 0-based indices over the FULL data set's users and movies."""

    user: np.ndarray  # int32
    movie: np.ndarray  # int32
    rating: np.ndarray  # float32
    ts: np.ndarray  # int64
    n_users: int
    n_movies: int
    user_ids: np.ndarray | None = None  # external ids, increasing
    movie_ids: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.rating.shape[0])

    def subset(self, mask: np.ndarray) -> Triples:
        return Triples(self.user[mask], self.movie[mask], self.rating[mask], self.ts[mask], self.n_users,
                       self.n_movies, self.user_ids, self.movie_ids)


def from_raw(users: np.ndarray, movies: np.ndarray, ratings: np.ndarray, ts: np.ndarray) -> Triples:
    """Dense indices (sorted external ids) and canonical row order (user, then movie)."""
    uu, u = _dense(np.asarray(users, np.int64))
    mm, m = _dense(np.asarray(movies, np.int64))
    order = np.argsort(u.astype(np.int64) * len(mm) + m, kind="stable")
    return Triples(np.ascontiguousarray(u[order].astype(np.int32)), np.ascontiguousarray(m[order].astype(np.int32)),
                   np.ascontiguousarray(np.asarray(ratings, np.float32)[order]),
                   np.ascontiguousarray(np.asarray(ts, np.int64)[order]), len(uu), len(mm), uu, mm)


def _dense(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct ids, index of each id): np.unique(return_inverse=True) without its slow path."""
    order = np.argsort(ids, kind="stable")
    s = ids[order]
    new = np.empty(len(s), bool)
    new[:1] = True
    np.not_equal(s[1:], s[:-1], out=new[1:])
    inv = np.empty(len(s), np.int64)
    inv[order] = np.cumsum(new) - 1
    return s[new], inv


def ml100k_dir() -> tuple[Path, str]:
    """Directory holding MovieLens 100K ``u.data`` and how it was found.

    Order: ``$MOVIEREC_BENCH_ML100K``; the product's ``movierec.data.fetch.fetch("ml-100k", data_dir)``
    (so a clean clone downloads it itself); ``/tmp/ml100k`` as the last resort.
    """
    env = os.environ.get("MOVIEREC_BENCH_ML100K")
    if env:
        return Path(env), f"$MOVIEREC_BENCH_ML100K={env}"
    errors = []
    try:
        from movierec.data.fetch import fetch  # type: ignore[import-not-found]
    except ImportError as exc:
        errors.append(f"movierec.data.fetch not importable ({exc})")
    else:
        try:
            from movierec.settings import get_settings
            data_dir = Path(get_settings().data_dir)
        except Exception:  # noqa: BLE001 - settings are optional here
            data_dir = ROOT / "var" / "data"
        try:
            path = Path(fetch("ml-100k", data_dir))
            folder = path if path.is_dir() else path.parent
            if (folder / "u.data").is_file():
                return folder, f"movierec.data.fetch.fetch('ml-100k', {data_dir})"
            hits = sorted(folder.rglob("u.data"))
            if hits:
                return hits[0].parent, f"movierec.data.fetch.fetch('ml-100k', {data_dir})"
            errors.append(f"fetch returned {path} without u.data")
        except Exception as exc:  # noqa: BLE001 - fall back, but say why
            errors.append(f"fetch failed: {exc.__class__.__name__}: {exc}")
    fallback = Path("/tmp/ml100k")
    if (fallback / "u.data").is_file():
        return fallback, "/tmp/ml100k (fallback: " + "; ".join(errors) + ")"
    raise SystemExit("MovieLens 100K not found: " + "; ".join(errors) + "; set MOVIEREC_BENCH_ML100K")


def load_ml100k() -> tuple[Triples, str]:
    folder, how = ml100k_dir()
    data_file = folder / "u.data"
    raw = np.loadtxt(data_file, dtype=np.int64, delimiter="\t", ndmin=2)
    digest = hashlib.sha256(data_file.read_bytes()).hexdigest()[:12]
    data = from_raw(raw[:, 0], raw[:, 1], raw[:, 2].astype(np.float32), raw[:, 3])
    return data, f"{data_file} ({len(data)} ratings, {data.n_users} users, {data.n_movies} movies, sha256 {digest}…; via {how})"


# -------------------------------------------------------------------------------------- splits


def random_split(data: Triples, frac: float = RANDOM_TEST_FRACTION, seed: int = SPLIT_SEED) -> np.ndarray:
    """Boolean mask, True for the ``round(frac * r)`` held-out rows."""
    r = len(data)
    mask = np.zeros(r, dtype=bool)
    mask[np.random.default_rng(seed).permutation(r)[: int(round(frac * r))]] = True
    return mask


def latest_split(data: Triples, frac: float = LATEST_TEST_FRACTION) -> np.ndarray:
    """Boolean mask, True for each user's latest ``floor(frac * count)`` ratings (ties: by movie)."""
    r = len(data)
    order = np.lexsort((data.movie, data.ts, data.user))
    counts = np.bincount(data.user, minlength=data.n_users)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    rank = np.arange(r) - starts  # position within the user, oldest first
    n_test = np.repeat(np.floor(counts * frac + 1e-9).astype(np.int64), counts)
    held = rank >= np.repeat(counts, counts) - n_test
    mask = np.zeros(r, dtype=bool)
    mask[order[held]] = True
    return mask


def check_splits_match_trainer(data: Triples, random_mask: np.ndarray, latest_mask: np.ndarray) -> str:
    """Compare our masks with ``trainer.split`` on the same rows; a sentence for the report."""
    try:
        from trainer import split as tsplit
        from trainer.data import Ratings
    except ImportError as exc:
        return f"trainer.split not importable ({exc}); splits not cross-checked"
    ratings = Ratings(data.user, data.movie, data.rating, data.ts, data.user_ids, data.movie_ids)
    same_r = np.array_equal(tsplit.random_split(ratings), random_mask)
    same_l = np.array_equal(tsplit.latest_split(ratings), latest_mask)
    seed_ok = getattr(tsplit, "SPLIT_SEED", None) == SPLIT_SEED
    if same_r and same_l and seed_ok:
        return "both masks identical to trainer.split (same rows held out)"
    return f"MISMATCH with trainer.split: random {same_r}, latest {same_l}, seed {seed_ok}"


# ------------------------------------------------------------------------------------- metrics


def rating_metrics(pred: np.ndarray, actual: np.ndarray, lo: float, hi: float) -> dict[str, float]:
    """RMSE and MAE of predictions clipped to [lo, hi]."""
    d = np.clip(np.asarray(pred, np.float64), lo, hi) - np.asarray(actual, np.float64)
    return {"rmse": float(np.sqrt(np.mean(d * d))), "mae": float(np.mean(np.abs(d)))}


def ranking_metrics(train: Triples, test: Triples, scorer: Callable[[np.ndarray], np.ndarray], k: int = K,
                    relevant_at: float = RELEVANT_AT, block: int = 256) -> dict[str, float]:
    """NDCG@k, Recall@k, HR@k (module docstring). ``scorer(users)`` -> (len(users), n_movies) scores."""
    import torch

    n, m = train.n_users, train.n_movies
    rel = test.rating >= relevant_at
    rel_sets = _csr(test.user[rel], test.movie[rel], n)
    seen = _csr(train.user, train.movie, n)
    n_rel = np.diff(rel_sets[0])
    users = np.flatnonzero(n_rel > 0)
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    idcg = np.concatenate(([1.0], np.cumsum(disc)))
    tot = {"ndcg": 0.0, "recall": 0.0, "hr": 0.0}
    for s in range(0, len(users), block):
        ub = users[s:s + block]
        scores = np.array(scorer(ub), dtype=np.float32, copy=True)
        if scores.shape != (len(ub), m):
            raise ValueError(f"scorer returned shape {scores.shape}, expected {(len(ub), m)}")
        rows, cols = _rows(seen, ub)
        scores[rows, cols] = -np.inf
        top = torch.topk(torch.from_numpy(scores), min(k, m), dim=1).indices.numpy()
        relevant = np.zeros((len(ub), m), dtype=bool)
        rows, cols = _rows(rel_sets, ub)
        relevant[rows, cols] = True
        gain = np.take_along_axis(relevant, top, axis=1)
        hits = gain.sum(1)
        nr = n_rel[ub]
        tot["ndcg"] += float(np.sum((gain @ disc[: gain.shape[1]]) / idcg[np.minimum(nr, k)]))
        tot["recall"] += float(np.sum(hits / nr))
        tot["hr"] += float(np.sum(hits > 0))
    cnt = max(len(users), 1)
    return {f"ndcg@{k}": tot["ndcg"] / cnt, f"recall@{k}": tot["recall"] / cnt, f"hr@{k}": tot["hr"] / cnt,
            "users": len(users)}


def _csr(rows: np.ndarray, cols: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(rows, kind="stable")
    return np.concatenate(([0], np.cumsum(np.bincount(rows, minlength=n)))), cols[order].astype(np.int64)


def _rows(csr: tuple[np.ndarray, np.ndarray], users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ptr, vals = csr
    parts_r, parts_c = [], []
    for i, u in enumerate(users):
        c = vals[ptr[u]:ptr[u + 1]]
        parts_c.append(c)
        parts_r.append(np.full(len(c), i, dtype=np.int64))
    if not parts_c:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(parts_r), np.concatenate(parts_c)


# ------------------------------------------------------------------------------------ reporting


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    a = np.asarray(values, np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def fmt_ms(values: Sequence[float], digits: int = 4) -> str:
    mu, sd = mean_sd(values)
    if len(values) == 1:
        return f"{mu:.{digits}f}"
    return f"{mu:.{digits}f} ± {sd:.{digits}f}"


def md_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def _version(mod: str) -> str:
    try:
        from importlib.metadata import version
        return version(mod)
    except Exception:  # noqa: BLE001
        return "absent"


def environment() -> str:
    """One paragraph: machine, versions, commit, date."""
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip() or "no commit"
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        commit += " (+ uncommitted changes)" if dirty else ""
    except (OSError, subprocess.SubprocessError):
        commit = "?"
    vers = ", ".join(f"{p} {_version(p)}" for p in ("torch", "numpy", "scikit-surprise", "implicit", "fastapi",
                                                     "uvicorn"))
    return (f"{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC; {cpu}, {os.cpu_count()} cores, {mem} RAM; "
            f"Python {platform.python_version()}; {vers}; git {commit}")


def write_result(name: str, text: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(text.rstrip() + "\n", encoding="utf-8")
    return path


def save_part(part: str, quick: bool, text: str, data: object) -> None:
    """Write a part's table (``<part>[-quick].md``) and raw figures (``.json``), then print the table."""
    suffix = "-quick" if quick else ""
    write_result(f"{part}{suffix}.md", text)
    (RESULTS / f"{part}{suffix}.json").write_text(json.dumps(data, indent=1, default=float) + "\n")
    print("\n" + text)


class Timer:
    def __enter__(self) -> Timer:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0
