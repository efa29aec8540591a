"""How much does fold-in with a few ratings beat popularity for users the model never saw?

Protocol (MovieLens 100K, real data):

* 10 % of the users (seed 7) are held out of training entirely; a ``dot`` model is trained by the
  trainer (default parameters) on the other users' ratings and published to a temporary store;
* for each held-out user with at least 10 + 5 ratings: the first 10 ratings in time are given to
  the service's fold-in (``app.scoring.LoadedModel.fold_in``, exactly what /recommend runs), the rest
  are the test set;
* ranking: relevant = test movies rated >= 4; candidates = every movie of the model except the 10
  given ones; NDCG@10, Recall@10, HR@10 of fold-in vs popularity (the service's damped mean,
  prior 25, on the training ratings) vs most-rated;
* rating: RMSE on the test ratings of the fold-in prediction vs the baseline (global + movie bias);
* the fold-in prior: the service's (mean and covariance of the trained users) at several noise
  variances, to check the default, beside a plain ridge towards zero.

Usage: ``python -m bench.foldin [--data DIR] [--epochs N] [--given 10] [--out bench/results/foldin.json]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from app import scoring
from app.catalogue import Catalogue
from app.scoring import LoadedModel
from movierec.store import ModelStore
from trainer.data import from_raw, load_files
from trainer.fit import defaults_for, fit
from trainer.models import RATING_SCALE, store_tensors

K = 10


def ranking(scores: np.ndarray, candidates: np.ndarray, relevant: set[int]) -> tuple[float, float, float]:
    """NDCG@10, Recall@10 and HR@10 of one user (rows index the model's movies)."""
    masked = np.full(scores.shape, -np.inf)
    masked[candidates] = scores[candidates]
    top = np.argpartition(-masked, K)[:K]
    top = top[np.argsort(-masked[top], kind="stable")]
    hits = np.array([row in relevant for row in top], dtype=float)
    dcg = float((hits / np.log2(np.arange(2, K + 2))).sum())
    idcg = float((1 / np.log2(np.arange(2, min(len(relevant), K) + 2))).sum())
    return dcg / idcg, hits.sum() / len(relevant), float(hits.sum() > 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=None, help="MovieLens 100K directory (default: fetched into MOVIEREC_DATA_DIR)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--given", type=int, default=10)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()

    if args.data is None:
        from movierec.data.fetch import fetch
        from movierec.settings import get_settings

        args.data = str(fetch("ml-100k", get_settings().data_dir))
    data = load_files(args.data)
    users_ext = data.user_ids[data.user]
    movies_ext = data.movie_ids[data.movie]
    rng = np.random.default_rng(7)
    held_users = set(rng.choice(data.user_ids, size=len(data.user_ids) // 10, replace=False).tolist())
    held_mask = np.isin(users_ext, list(held_users))
    train = from_raw(users_ext[~held_mask], movies_ext[~held_mask], data.rating[~held_mask],
                     data.rated_at[~held_mask])
    params = defaults_for("dot")
    if args.epochs:
        params.epochs = args.epochs
    started = time.perf_counter()
    model, _ = fit(train, params)
    train_s = time.perf_counter() - started
    tensors = store_tensors(model, train.user_ids, train.movie_ids)
    manifest = {"kind": "dot", "factors": params.factors, "y_range": list(params.y_range),
                "rating_scale": list(RATING_SCALE), "global_bias": model.global_bias,
                "counts": {"users": train.n_users, "movies": train.n_movies}, "data": train.snapshot()}

    catalogue_rows = []
    movies_file = Path(args.data) / "movies.tsv"
    if movies_file.is_file():
        for line in movies_file.read_text(encoding="utf-8").splitlines()[1:]:
            mid, title, year, genres = (line.split("\t") + ["", "", ""])[:4]
            catalogue_rows.append((int(mid), title, int(year) if year.isdigit() else None, genres.replace(" ", "|")))
    else:
        catalogue_rows = [(int(m), str(m), None, "") for m in train.movie_ids]

    with tempfile.TemporaryDirectory() as tmp:
        store = ModelStore(tmp)
        version = store.publish(tensors, manifest)
        artifact = store.load(version)
    loaded = LoadedModel(artifact)
    in_catalogue = Catalogue.from_rows(catalogue_rows).aligned_to(loaded.movie_ids).in_catalogue

    # Popularity on the training ratings, as the service computes it (damped mean, prior 25).
    m_rows, m_found = loaded.movie_rows(movies_ext[~held_mask])
    counts = np.bincount(m_rows[m_found], minlength=len(loaded.movie_ids)).astype(float)
    sums = np.bincount(m_rows[m_found], weights=data.rating[~held_mask][m_found], minlength=len(loaded.movie_ids))
    global_mean = sums.sum() / counts.sum()
    damped = (sums + 25 * global_mean) / (counts + 25)

    noise_vars = [0.25, 0.5, 1.0, 2.0]
    # The service's prior (mean and covariance of the trained users) and, for comparison, the
    # plain ridge towards zero with the same noise variance.
    prior = (loaded.prior_mean, loaded.prior_precision)
    var_u = float(np.mean(loaded.user_factors.astype(np.float64) ** 2))
    var_b = float(np.mean(loaded.user_bias.astype(np.float64) ** 2))
    ridge = (np.zeros_like(prior[0]), np.diag([1 / var_u] * loaded.k + [1 / var_b]))
    variants = {f"fold_in nv={nv}": (nv, prior) for nv in noise_vars}
    variants["ridge to zero nv=0.5"] = (0.5, ridge)
    results: dict[str, list[tuple[float, float, float]]] = {"popularity": [], "most_rated": []}
    sq: dict[str, list[float]] = {"baseline": []}
    for name in variants:
        results[name] = []
        sq[name] = []
    foldin_ms = []
    evaluated = 0
    for user in sorted(held_users):
        idx = np.flatnonzero(users_ext == user)
        idx = idx[np.lexsort((movies_ext[idx], data.rated_at[idx]))]
        rows, found = loaded.movie_rows(movies_ext[idx])
        idx, rows = idx[found], rows[found]
        if len(idx) < args.given + 5:
            continue
        given, test = slice(0, args.given), slice(args.given, None)
        relevant = {int(r) for r, y in zip(rows[test], data.rating[idx][test], strict=True) if y >= 4}
        candidates = np.setdiff1d(np.arange(len(loaded.movie_ids)), rows[given])
        candidates = candidates[in_catalogue[candidates]]
        test_ratings = data.rating[idx][test].astype(float)
        base = loaded.predict(np.zeros((len(test_ratings), loaded.k), np.float32), np.zeros(len(test_ratings)),
                              rows[test])
        sq["baseline"].extend((base - test_ratings) ** 2)
        for name, (nv, (mean, precision)) in variants.items():
            loaded.foldin_noise_var, loaded.prior_mean, loaded.prior_precision = nv, mean, precision
            t0 = time.perf_counter()
            vec = loaded.fold_in(rows[given], data.rating[idx][given])
            foldin_ms.append(1000 * (time.perf_counter() - t0))
            pred = loaded.predict(np.repeat(vec.vec[None], len(test_ratings), 0), np.full(len(test_ratings), vec.bias),
                                  rows[test])
            sq[name].extend((pred - test_ratings) ** 2)
            if relevant:
                results[name].append(ranking(loaded.rank_scores(vec).astype(float), candidates, relevant))
        if relevant:
            results["popularity"].append(ranking(damped, candidates, relevant))
            results["most_rated"].append(ranking(counts, candidates, relevant))
        evaluated += 1

    table = {}
    for name, rows_ in results.items():
        arr = np.array(rows_)
        table[name] = {"ndcg@10": round(float(arr[:, 0].mean()), 4), "recall@10": round(float(arr[:, 1].mean()), 4),
                       "hr@10": round(float(arr[:, 2].mean()), 4), "users": len(rows_)}
    for name, errs in sq.items():
        table.setdefault(name, {})["rmse"] = round(float(np.sqrt(np.mean(errs))), 4)
    summary = {
        "data": args.data, "held_out_users": len(held_users), "evaluated_users": evaluated, "given": args.given,
        "train_seconds": round(train_s, 1), "epochs": params.epochs, "factors": params.factors,
        "default_noise_var": scoring.DEFAULT_FOLDIN_NOISE_VAR,
        "foldin_ms_mean": round(float(np.mean(foldin_ms)), 3), "foldin_ms_p99": round(float(np.percentile(foldin_ms, 99)), 3),
        "results": table,
    }
    print(json.dumps(summary, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
