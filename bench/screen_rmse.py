"""Ad-hoc screen (issue 16 RMSE), random-protocol TUNING folds only: members trained once per (config, fold),
then several ways of combining them scored: K members, truncation rank, a refit of the rating biases alone
(``--l2``), the rating refit of trainer.fit.refit (``--prox``). Prints one JSON line per (config, fold);
results of 2026-12-08 in bench/results/screen-rmse-2026-12-08.jsonl (docs/trainer.md).

usage: python -m bench.screen_rmse --configs default wd=0.09 factors=32 --members 5 --l2 1 3 --prox 100 200"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np

from bench import common as C
from bench import protocols as P
from bench.accuracy import pin_threads
from bench.tune import parse_config


def refit_biases(model, train, l2: float, iters: int = 15):
    """Rating biases (user, movie, global offset) refitted by Gauss-Newton with the factors fixed."""
    import torch
    u, m, r = train.user.astype(np.int64), train.movie.astype(np.int64), train.rating.astype(np.float64)
    uf = model.user_factors.detach().double().numpy()
    mf = model.movie_factors.detach().double().numpy()
    d = np.einsum("ij,ij->i", uf[u], mf[m])
    bu = model.user_bias.detach().double().numpy().copy()
    bm = model.movie_bias.detach().double().numpy().copy()
    g = float(model.global_bias)
    lo, hi = model.y_range
    nu, nm = len(bu), len(bm)
    for _ in range(iters):
        for side in ("u", "m", "g"):
            x = d + bu[u] + bm[m] + g
            s = 1 / (1 + np.exp(-x))
            pred = lo + (hi - lo) * s
            e = r - pred
            j = (hi - lo) * s * (1 - s)
            if side == "u":
                bu += (np.bincount(u, j * e, nu) - l2 * bu) / (np.bincount(u, j * j, nu) + l2)
            elif side == "m":
                bm += (np.bincount(m, j * e, nm) - l2 * bm) / (np.bincount(m, j * j, nm) + l2)
            else:
                g += float(np.sum(j * e) / np.sum(j * j))
    out = dataclasses.replace  # noqa
    import copy
    new = copy.deepcopy(model)
    new.user_bias.data = torch.tensor(bu, dtype=torch.float32)
    new.movie_bias.data = torch.tensor(bm, dtype=torch.float32)
    new.global_bias = g
    return new


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", nargs="+", default=["default"])
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--ranks", type=int, nargs="+", default=[64])
    ap.add_argument("--l2", type=float, nargs="*", default=[])
    ap.add_argument("--prox", type=float, nargs="*", default=[])
    ap.add_argument("--sweeps", type=int, default=2)
    ap.add_argument("--skip", type=int, default=0, help="skip the first N folds")
    args = ap.parse_args()
    pin_threads(1)
    from trainer.fit import defaults_for, fit
    from trainer.fit.ensemble import combine, truncate
    data, _ = C.load_ml100k()
    for fold in list(P.folds(data, "random", "tuning", args.folds))[args.skip:]:
        train = P.as_ratings(fold.train)
        lo, hi = float(fold.train.rating.min()), float(fold.train.rating.max())

        def rmse(model):
            return C.rating_metrics(model.predict(fold.test.user, fold.test.movie), fold.test.rating, lo, hi)["rmse"]

        for text in args.configs:
            base = dataclasses.replace(defaults_for("dot"), seed=fold.seed, **parse_config(text))
            members = []
            t0 = time.perf_counter()
            for i in range(args.members):
                model, _ = fit(train, dataclasses.replace(base, ensemble=1, seed=base.seed + i))
                members.append(model)
            row = {"config": text, "seed": fold.seed, "fit_s": round(time.perf_counter() - t0, 1),
                   "single": rmse(members[0])}
            for k in range(2, args.members + 1):
                for rank in args.ranks:
                    ens = truncate(combine(members[:k]), rank)
                    row[f"K{k}r{rank}"] = rmse(ens)
                    if k == args.members or k == 3:
                        for l2 in args.l2:
                            row[f"K{k}r{rank}b{l2:g}"] = rmse(refit_biases(ens, train, l2))
                        for lam in args.prox:
                            import copy
                            from trainer.fit.refit import refit_rating
                            row[f"K{k}r{rank}p{lam:g}"] = rmse(refit_rating(copy.deepcopy(ens), train, lam,
                                                                            sweeps=args.sweeps))
            print(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in row.items()}), flush=True)


if __name__ == "__main__":
    main()
