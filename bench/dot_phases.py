"""Where the numba ``dot`` step's time goes, per phase, at 1 and N threads: what keeps it from scaling.

usage: python -m bench.dot_phases [--n 2e6] [--threads 1 2] [--epochs 1]

Each phase of a fit (the epoch's permutation, shuffle and negatives; per step each kernel, the
BLAS products, and the Python between them) is timed by wrapping the functions the step calls,
so the figures are wall time of the real fit, with the wrappers' own cost (~1 us a call) included.
A phase whose time does not fall as threads grow is serial; its share at N threads is what caps
the speed-up (Amdahl). Prints a table (seconds per phase and thread count, and the ratio).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

#: The kernels (trainer.kernels) a ``dot`` fit calls; each is timed as its own phase.
KERNELS = ("rating_rows", "softmax_shift", "softmax_grad", "bpr_rows", "touched_rows", "adam_rows",
           "random_permutation", "shuffle_ratings")


def profile(n: int, threads: int, epochs: int) -> dict[str, float]:
    """Seconds per phase of one fit of the trainer's defaults on ``n`` synthetic ratings with ``threads``."""
    import numba
    import numpy as np

    from bench.synthetic import load
    from trainer import kernels as K
    from trainer.data import Ratings
    from trainer.fit import FitParams, fit
    from trainer.fit import dot as D
    from trainer.fit import sampling as S

    os.environ["MOVIEREC_TRAIN_THREADS"] = str(threads)
    spent: dict[str, float] = defaultdict(float)

    def timed(name: str, fn):  # type: ignore[no-untyped-def]
        def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - t0
        return wrapper

    saved = {name: getattr(K, name) for name in KERNELS if hasattr(K, name)}
    patched = [(K, name, timed(name, fn)) for name, fn in saved.items()]
    patched += [(D.DotBatch, "__call__", timed("step (all of it)", D.DotBatch.__call__)),
                (D.DotBatch, "_softmax", timed("softmax (kernels + BLAS)", D.DotBatch._softmax)),
                (D.DotStep, "permutation", timed("permutation (all of it)", D.DotStep.permutation)),
                (D.DotStep, "begin_epoch", timed("begin_epoch (shuffle, negatives to int32)", D.DotStep.begin_epoch)),
                (S.Ranking, "draw", timed("negatives drawn", S.Ranking.draw))]
    originals = [(obj, name, getattr(obj, name)) for obj, name, _ in patched]
    d = load(n)
    ratings = Ratings(d["user"], d["movie"], d["rating"], np.zeros(n, np.int64),
                      np.arange(int(d["n_users"]), dtype=np.int64), np.arange(int(d["n_movies"]), dtype=np.int64))
    params = FitParams(factors=50, epochs=epochs, seed=0)
    D.warm_up(params)  # compiled (or loaded from numba's cache) before the clocks start
    for obj, name, wrapped in patched:
        setattr(obj, name, wrapped)
    try:
        t0 = time.perf_counter()
        _, history = fit(ratings, params)
        total = time.perf_counter() - t0
    finally:
        for obj, name, original in originals:
            setattr(obj, name, original)
    out = dict(spent)
    out["epochs (trainer's clock)"] = sum(history.seconds)
    out["fit call"] = total
    out["threads used"] = float(numba.get_num_threads())
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=float, default=2e6)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    n = int(args.n)
    if args.worker:
        import json

        print(json.dumps(profile(n, args.worker, args.epochs)))
        return
    import json
    import subprocess

    from bench.synthetic import cached

    cached(n)
    rows = {}
    for t in args.threads:  # each in a fresh process: numba's thread pool is sized once
        load = os.getloadavg()[0]
        out = subprocess.run([sys.executable, "-m", "bench.dot_phases", "--n", str(n), "--epochs", str(args.epochs),
                              "--worker", str(t)], capture_output=True, text=True, check=True,
                             env={**os.environ, "GOMP_SPINCOUNT": os.environ.get("GOMP_SPINCOUNT", "100000")})
        rows[t] = (json.loads(out.stdout.strip().splitlines()[-1]), load, os.getloadavg()[0])
    names = sorted({k for r, _, _ in rows.values() for k in r}, key=lambda k: -rows[args.threads[0]][0].get(k, 0))
    base = args.threads[0]
    print(f"{n:,} ratings, {args.epochs} epoch(s), k=50, trainer defaults; load avg 1 min (start -> end) per column:")
    print("| phase | " + " | ".join(f"{t} thr s ({rows[t][1]:.1f} -> {rows[t][2]:.1f})" for t in args.threads)
          + " | " + " | ".join(f"{base}->{t} speed-up" for t in args.threads[1:]) + " |")
    print("|---" * (1 + 2 * len(args.threads) - 1) + "|")
    for name in names:
        vals = [rows[t][0].get(name, 0.0) for t in args.threads]
        ratios = [f"{vals[0] / v:.2f}" if v else "-" for v in vals[1:]]
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in vals) + " | " + " | ".join(ratios) + " |")


if __name__ == "__main__":
    main()
