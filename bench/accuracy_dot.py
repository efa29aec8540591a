"""Accuracy sweep of the ``dot`` trainer on MovieLens 100K: RMSE (random 10 %) and NDCG@10 (per-user latest 20 %).

Each protocol trains its own model on its own split with the same parameters, exactly as
``trainer.pipeline.evaluate`` does. One JSON line per (settings, seed) is printed (and appended to
``--out`` when given), then the mean and spread over seeds.

usage: .venv/bin/python bench/accuracy_dot.py [/tmp/ml100k] [seeds=42,43,44] [key=value ...]
       (keys of trainer.fit.FitParams, or their old names; tuples comma-separated)
"""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

from trainer.data import load_files
from trainer.fit import FitParams, fit
from trainer.fit.params import RENAMED_PARAMS
from trainer.metrics import ranking_metrics, rating_metrics
from trainer.split import latest_split, random_split


def parse(args: list[str]) -> tuple[str, list[int], dict, str | None]:
    src, seeds, kw, out = "/tmp/ml100k", [42], {}, None
    if args and "=" not in args[0]:
        src = args.pop(0)
    for a in args:
        k, v = a.split("=", 1)
        if k == "seeds":
            seeds = [int(x) for x in v.split(",")]
        elif k == "out":
            out = v
        else:
            k = RENAMED_PARAMS.get(k, k)
            d = getattr(FitParams, k)
            kw[k] = tuple(type(d[0])(x) for x in v.split(",")) if isinstance(d, tuple) else type(d)(v)
    return src, seeds, kw, out


def run(data, params: FitParams, skip_rank: bool = False) -> dict:
    row: dict = {}
    mask = random_split(data)
    tr, te = data.subset(~mask), data.subset(mask)
    t0 = time.perf_counter()
    model, _ = fit(tr, params)
    row["fit_s"] = time.perf_counter() - t0
    row["rmse"] = rating_metrics(model.predict(te.user, te.movie), te.rating)["rmse"]
    if skip_rank:
        return row
    mask = latest_split(data)
    tr, te = data.subset(~mask), data.subset(mask)
    t0 = time.perf_counter()
    model, _ = fit(tr, params)
    row["fit_s"] += time.perf_counter() - t0
    m = ranking_metrics(tr, te, model.rank_scores)
    row.update({k: m[k] for k in ("ndcg@10", "recall@10", "hr@10")})
    row["rank_scale"] = getattr(model, "rank_scale", None)  # nn models have none
    return row


def main() -> None:
    src, seeds, kw, out = parse(sys.argv[1:])
    data = load_files(src)
    rows = []
    for seed in seeds:
        params = FitParams(**{**kw, "seed": seed})
        row = {"settings": kw, "seed": seed, **run(data, params, bool(os.environ.get("SKIP_RANK")))}
        rows.append(row)
        line = json.dumps(row)
        print(line, flush=True)
        if out:
            with open(out, "a") as f:
                f.write(line + "\n")
    if len(rows) > 1:
        for k in ("rmse", "ndcg@10", "recall@10", "hr@10", "fit_s"):
            if k in rows[0]:
                v = np.array([r[k] for r in rows])
                print(f"{k:10s} mean {v.mean():.4f}  min {v.min():.4f}  max {v.max():.4f}")


if __name__ == "__main__":
    main()
