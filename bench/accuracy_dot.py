"""Quick accuracy check on MovieLens 100K: RMSE (random 10 %) and NDCG@10 (per-user latest 20 %).

usage: .venv/bin/python bench/accuracy_dot.py [/tmp/ml100k] [key=value ...]   (keys of trainer.fit.FitParams)
"""
from __future__ import annotations

import sys
import time

from trainer.data import load_files
from trainer.fit import FitParams, fit
from trainer.metrics import BiasBaseline, popularity_scores, ranking_metrics, rating_metrics
from trainer.split import latest_split, random_split

args = sys.argv[1:]
src = args.pop(0) if args and "=" not in args[0] else "/tmp/ml100k"
kw = {}
for a in args:
    k, v = a.split("=", 1)
    kw[k] = type(getattr(FitParams, k))(v) if not isinstance(getattr(FitParams, k), tuple) else tuple(map(float, v.split(",")))
params = FitParams(**kw)
data = load_files(src)
mask = random_split(data)
tr, te = data.subset(~mask), data.subset(mask)
t0 = time.perf_counter()
model, hist = fit(tr, params, te)
t1 = time.perf_counter()
print("rmse", rating_metrics(model.predict(te.user, te.movie), te.rating), f"{t1-t0:.1f}s",
      "curve", [round(x, 4) for x in hist.valid_rmse])
base = BiasBaseline().fit(tr)
print("baseline", rating_metrics(base.predict(te.user, te.movie), te.rating))
import os
if os.environ.get("SKIP_RANK"): sys.exit(0)
mask = latest_split(data)
tr, te = data.subset(~mask), data.subset(mask)
t0 = time.perf_counter()
model, hist = fit(tr, params)
t1 = time.perf_counter()
print("rank", ranking_metrics(tr, te, model.rank_scores), f"{t1-t0:.1f}s")
pop = popularity_scores(tr)
import numpy as np
print("pop", ranking_metrics(tr, te, lambda u: np.broadcast_to(pop, (len(u), len(pop)))))
print("rank-by-rating", ranking_metrics(tr, te, lambda u: model.user_factors.data[u] @ model.movie_factors.data.T + model.movie_bias.data))
