"""Choosing defaults by cross-validation on the TUNING folds only (bench/protocols.py); never on evaluation folds.

usage: python -m bench.tune dot [--protocols random latest] [--configs 'rank_weight=0.25' 'wd=0.12,epochs=25' ...]
       python -m bench.tune blend [--protocols latest cold]   # item term: blend x neighbours x lambda
       python -m bench.tune baselines                         # EASE lambda, item-kNN neighbours

``dot``: each configuration (FitParams overrides of ``defaults_for('dot')``; ``default`` = none) is
trained on every tuning fold of each protocol; ``blend``: one ``dot`` fit per fold (the defaults
without item term), then every item-term setting scored on it (the term is added at scoring, so
no refit is needed); ``baselines``: EASE and item-kNN settings. Prints one JSON line per (config,
fold) and a table of means ± sd, written to bench/results/tuning-<stage>.md (and .json).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import time

for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS"):  # see bench/accuracy.py
    os.environ.setdefault(_var, "1")

import numpy as np

from bench import common as C
from bench import protocols as P
from bench.accuracy import pin_threads
from bench.ours import OursDot, fold_in_scores, served_model
from bench.systems import ItemItem

BLEND = (0.5, 1.0, 2.0, 3.0)
NEIGHBOURS = (100, 200, 400)
LAMBDAS = (100.0, 200.0, 400.0)
EASE_LAMBDAS = (50.0, 100.0, 200.0, 400.0, 800.0)
KNN_NEIGHBOURS = (20, 50, 100, 200)


def parse_config(text: str) -> dict:
    """``'wd=0.12,epochs=25'`` -> FitParams overrides typed like the defaults; ``default`` -> {}."""
    from trainer.fit import FitParams

    if text == "default":
        return {}
    out = {}
    for part in text.split(","):
        key, value = part.split("=", 1)
        out[key] = type(getattr(FitParams, key))(value)
    return out


def measure(fold: P.Fold, score, fold_in=None) -> dict:  # noqa: ANN001 - scorer callables
    if fold.protocol == "cold":
        return C.ranking_metrics(fold.given, fold.test, fold_in)
    return C.ranking_metrics(fold.train, fold.test, score)


def stage_dot(data: C.Triples, protocols: list[str], configs: list[str], emit,  # noqa: ANN001
              n_folds: int | None = None) -> None:
    for protocol in protocols:
        for fold in P.folds(data, protocol, "tuning", n_folds):
            for text in configs:
                system = OursDot(**parse_config(text))
                with C.Timer() as t:
                    system.fit(fold.train, fold.seed)
                row = {"config": text, "protocol": protocol, "seed": fold.seed, "fit_s": t.seconds}
                if protocol == "random":
                    lo, hi = float(fold.train.rating.min()), float(fold.train.rating.max())
                    row.update(C.rating_metrics(system.predict(fold.test.user, fold.test.movie), fold.test.rating,
                                                lo, hi))
                else:
                    row.update(measure(fold, system.score,
                                       lambda users, s=system, f=fold: s.fold_in(f.given, users)))
                emit(row)


def stage_blend(data: C.Triples, protocols: list[str], emit, blends: tuple[float, ...] = BLEND,  # noqa: ANN001
                neighbours: tuple[int, ...] = NEIGHBOURS, lambdas: tuple[float, ...] = LAMBDAS) -> None:
    from trainer.itemitem import ease, with_item_term
    from movierec.item_term import from_dense_topk

    for protocol in protocols:
        for fold in P.folds(data, protocol, "tuning"):
            base = OursDot(item_blend=0.0).fit(fold.train, fold.seed)
            tr = fold.train
            for lam in lambdas:
                b = ease(tr.user, tr.movie, tr.n_users, tr.n_movies, lam)
                for k, w in itertools.product(neighbours, (0.0, *blends)):
                    if w == 0 and (k, lam) != (neighbours[0], lambdas[0]):
                        continue
                    term = from_dense_topk(b, k, w) if w else None
                    score = with_item_term(base.model.rank_scores, term, tr.user, tr.movie, tr.n_users)
                    served = served_model(base.model, base.ratings, term) if protocol == "cold" else None
                    row = {"config": f"blend={w},neighbours={k},lambda={lam:g}" if w else "blend=0",
                           "protocol": protocol, "seed": fold.seed}
                    row.update(measure(fold, score, lambda users, s=served, f=fold: fold_in_scores(s, f.given, users)))
                    emit(row)


def stage_baselines(data: C.Triples, protocols: list[str], emit) -> None:  # noqa: ANN001
    systems = [ItemItem("ease", lam) for lam in EASE_LAMBDAS] + [ItemItem("knn", k) for k in KNN_NEIGHBOURS]
    for protocol in protocols:
        for fold in P.folds(data, protocol, "tuning"):
            for system in systems:
                system.fit(fold.train, fold.seed)
                row = {"config": f"{system.name} {system.param:g}", "protocol": protocol, "seed": fold.seed}
                row.update(measure(fold, system.score, lambda users, s=system, f=fold: s.fold_in(f.given, users)))
                emit(row)


def table(rows: list[dict]) -> str:
    protocols = sorted({r["protocol"] for r in rows}, key=P.PROTOCOLS.index)
    configs = list(dict.fromkeys(r["config"] for r in rows))
    body = []
    for c in configs:
        cells = [c]
        for p in protocols:
            key = P.METRIC[p]
            vals = [r[key] for r in rows if r["config"] == c and r["protocol"] == p]
            cells.append(C.fmt_ms(vals) + f" (n={len(vals)})" if vals else "–")
        body.append(cells)
    return C.md_table(["config"] + [f"{p} {P.METRIC[p]}" for p in protocols], body)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage", choices=("dot", "blend", "baselines"))
    ap.add_argument("--protocols", nargs="+", choices=P.PROTOCOLS, default=None)
    ap.add_argument("--configs", nargs="+", default=["default"])
    ap.add_argument("--folds", type=int, default=None,
                    help="dot stage: only the first N tuning folds of each protocol (a quick screen; default all)")
    ap.add_argument("--blend", type=float, nargs="+", default=list(BLEND), help="blend stage: weights")
    ap.add_argument("--neighbours", type=int, nargs="+", default=list(NEIGHBOURS), help="blend stage: neighbours")
    ap.add_argument("--lambdas", type=float, nargs="+", default=list(LAMBDAS), help="blend stage: EASE lambdas")
    ap.add_argument("--out", default=None, help="result name (default tuning-<stage>)")
    args = ap.parse_args(argv)
    pin_threads(1)
    data, source = C.load_ml100k()
    protocols = args.protocols or (["random", "latest"] if args.stage == "dot" else ["latest", "cold"])
    rows: list[dict] = []
    t0 = time.perf_counter()

    def emit(row: dict) -> None:
        rows.append(row)
        print(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in row.items()}), flush=True)

    {"dot": lambda: stage_dot(data, protocols, args.configs, emit, args.folds),
     "blend": lambda: stage_blend(data, protocols, emit, tuple(args.blend), tuple(args.neighbours),
                                  tuple(args.lambdas)),
     "baselines": lambda: stage_baselines(data, protocols, emit)}[args.stage]()
    text = (f"# Tuning ({args.stage}), tuning folds {P.TUNING_SEEDS}\n\nData: {source}. {time.perf_counter() - t0:.0f} s, "
            f"load average {os.getloadavg()[0]:.1f}. Cells: mean ± sd over folds.\n\n{table(rows)}\n")
    name = args.out or f"tuning-{args.stage}"
    C.write_result(f"{name}.md", text)
    (C.RESULTS / f"{name}.json").write_text(json.dumps(rows, indent=1) + "\n")
    print("\n" + text)


if __name__ == "__main__":
    main()
