"""Part 1 -- accuracy on MovieLens 100K: every system on the same cross-validation folds, one metric implementation.

usage: python -m bench.accuracy [--quick] [--split evaluation|tuning] [--protocols random latest cold timecut]
                                [--folds N] [--only NAME ...] [--out NAME]

Four protocols (bench/protocols.py): ``random`` (RMSE), ``latest``, ``cold`` (users held out of training,
fold-in from their first 10 ratings) and ``timecut`` (NDCG@10, Recall@10, HR@10); each on several folds
of the **evaluation** seeds by default (never used for choosing a default; bench/tune.py tunes on the
tuning seeds). Cells are mean ± sample sd over the folds. Writes bench/results/accuracy.md and
accuracy.json (``--out`` another name; a partial run never overwrites the full results).
``--quick``: one fold per protocol.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# One numba/OpenMP thread: on a shared 2-core machine a 2-thread parallel loop stalls whenever one
# thread is descheduled (measured: a dot fit 60 s with 2 threads at load 10, 5 s with one).
for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from bench import common as C
from bench import protocols as P
from bench import systems as S
from bench.ours import OursDot, OursNN

#: The issue's targets, as the mean over the folds.
TARGET_RMSE, TARGET_NDCG = 0.890, 0.170
#: EASE's lambda and item-kNN's neighbours, chosen on the tuning folds (bench/tune.py, docs/benchmarks.md).
EASE_LAMBDA = 200.0
KNN_NEIGHBOURS = 100


def all_systems() -> tuple[list[S.System], list[str]]:
    notes: list[str] = []
    systems: list[S.System] = []
    why = S.Ours.available()
    if why is None:
        systems += [OursDot(), OursNN("scratch"), OursNN("frozen"), OursNN("finetune")]
    else:
        notes.append(f"ours: trainer API not available ({why}); rows omitted")
    systems += [S.ItemItem("ease", EASE_LAMBDA), S.ItemItem("knn", KNN_NEIGHBOURS), S.Popularity()]
    for name, make in (("implicit", S.implicit_systems), ("Surprise", S.surprise_systems)):
        try:
            systems += make()
        except ImportError as exc:
            notes.append(f"{name} not installed ({exc}; `make bench-deps`): rows omitted")
    systems += [S.FastaiRecipe(), S.GlobalMean()]
    return systems, notes


def pin_threads(n: int) -> str:
    """Run every torch/numba system with ``n`` threads; a sentence for the report.

    Accuracy does not depend on the thread count (beyond float summation order); the trainer's
    ``set_threads()`` (all cores) is replaced by a no-op for this process only.
    """
    import numba
    import torch

    torch.set_num_threads(n)
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    import trainer.fit as tfit

    def pinned() -> int:
        torch.set_num_threads(n)
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
        return n

    tfit.set_threads = pinned
    return f"torch and numba threads pinned to {n} for every system (trainer.fit.set_threads overridden here)"


def evaluate(system: S.System, fold: P.Fold) -> dict | None:
    """Fit ``system`` on the fold and measure it; None when the protocol does not apply to it."""
    if fold.protocol == "random" and not system.rating:
        return None
    if fold.protocol != "random" and not system.ranking:
        return None
    if fold.protocol == "cold" and type(system).fold_in is S.System.fold_in:
        return None  # cannot place a user it was not trained on: nothing to fit
    lo, hi = float(fold.train.rating.min()), float(fold.train.rating.max())
    with C.Timer() as t:
        system.fit(fold.train, fold.seed)
    row: dict = {"protocol": fold.protocol, "seed": fold.seed, "fit_s": t.seconds}
    if fold.protocol == "random":
        row.update(C.rating_metrics(system.predict(fold.test.user, fold.test.movie), fold.test.rating, lo, hi))
    elif fold.protocol == "cold":
        assert fold.given is not None
        probe = system.fold_in(fold.given, np.unique(fold.given.user)[:1])
        if probe is None:
            return None
        row.update(C.ranking_metrics(fold.given, fold.test, lambda users: system.fold_in(fold.given, users)))
    else:
        row.update(C.ranking_metrics(fold.train, fold.test, system.score))
    return row


def run(split: str, protocols: list[str], n_folds: int | None, only: list[str] | None, threads: int = 1) -> dict:
    t_start = time.perf_counter()
    notes = [pin_threads(threads)]
    data, source = C.load_ml100k()
    systems, more = all_systems()
    notes += more
    if only:
        systems = [s for s in systems if any(o.lower() in s.name.lower() for o in only)]
    print(f"data: {source}\nsplit: {split} seeds {P.seeds_of(split)}", flush=True)
    results: dict = {"source": source, "notes": notes, "split": split, "seeds": list(P.seeds_of(split)),
                     "folds": {}, "systems": {s.name: {"config": s.config, "runs": []} for s in systems}}
    for protocol in protocols:
        for fold in P.folds(data, protocol, split, n_folds):
            results["folds"][fold.key] = {"train": len(fold.train), "test": len(fold.test),
                                          "given": len(fold.given) if fold.given is not None else 0}
            for system in systems:  # fold-major: the nn variants reuse the dot model of the same fold
                row = evaluate(system, fold)
                if row is None:
                    continue
                results["systems"][system.name]["runs"].append(row)
                shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
                print(f"  {system.name:40s} {shown}", flush=True)
    results["protocols"] = protocols
    results["environment"] = C.environment()
    results["seconds"] = time.perf_counter() - t_start
    results["load"] = os.getloadavg()[0]
    return results


def merge(parts: list[dict]) -> dict:
    """Several runs on the same split (e.g. baselines and ours run apart) as one result."""
    if len({p["split"] for p in parts}) != 1:
        raise SystemExit("--merge: the runs are on different splits")
    out = {**parts[0], "systems": {}, "folds": {}, "notes": [], "protocols": []}
    for p in parts:
        for name, entry in p["systems"].items():  # a system run in several parts: its folds together, once each
            mine = out["systems"].setdefault(name, {"config": entry["config"], "runs": []})
            seen = {(r["protocol"], r["seed"]) for r in mine["runs"]}
            mine["runs"] += [r for r in entry["runs"] if (r["protocol"], r["seed"]) not in seen]
        out["folds"].update(p["folds"])
        out["notes"] += [n for n in p["notes"] if n not in out["notes"]]
        out["protocols"] += [x for x in p["protocols"] if x not in out["protocols"]]
    out["seconds"] = sum(p["seconds"] for p in parts)
    out["load"] = max(p.get("load", 0.0) for p in parts)
    out["environment"] = parts[-1]["environment"]
    return out


def values(entry: dict, protocol: str, key: str) -> list[float]:
    """The ``key`` figures of one system on one protocol's folds."""
    return [r[key] for r in entry["runs"] if r["protocol"] == protocol and key in r]


TITLES = {
    "random": "Random 10 % held out: RMSE and MAE (lower is better)",
    "latest": "Each user's latest 20 % held out (a random half of the users per fold): NDCG@10 (higher is better)",
    "cold": "Cold users: held out of training, first 10 ratings folded in as the API does (higher is better)",
    "timecut": "Global time cut (training before a quantile 0.75-0.9 of all timestamps): NDCG@10 (higher is better)",
}


def _fewer(vals: list[float], n: int) -> str:
    """A mark for a row measured on fewer folds than the protocol has (a slow system run on the first ones)."""
    return f" ({len(vals)} of {n} folds)" if len(vals) < n else ""


def render(res: dict) -> str:
    sysd = res["systems"]
    out = ["# Accuracy on MovieLens 100K, cross-validated", "",
           f"Data: {res['source']}.",
           f"Folds: the **{res['split']}** seeds {res['seeds']} (bench/protocols.py; defaults were chosen on the "
           f"{'evaluation' if res['split'] == 'tuning' else 'tuning'} seeds, never on these). Cells are mean ± "
           f"sample sd over the folds; a fold's seed is also every system's training seed. Total run time "
           f"{res['seconds']:.0f} s (load average {res.get('load', float('nan')):.1f}).",
           f"Environment: {res['environment']}.", ""]
    out += [f"- {n_}" for n_ in res["notes"]] + [""]
    for protocol in res["protocols"]:
        n = len([k for k in res["folds"] if k.startswith(protocol + "/")])
        if protocol == "random":
            rows = []
            for name, e in sysd.items():
                rm = values(e, protocol, "rmse")
                if rm:
                    rows.append([name + _fewer(rm, n), C.fmt_ms(rm), C.fmt_ms(values(e, protocol, "mae")),
                                 f"{np.mean(values(e, protocol, 'fit_s')):.1f}", e["config"]])
            rows.sort(key=lambda r: float(r[1].split()[0]))
            out += [f"## {TITLES[protocol]}", "", f"{n} folds.", "",
                    C.md_table(["system", "RMSE", "MAE", "fit s", "configuration"], rows), "",
                    f"Target for ours: mean RMSE <= {TARGET_RMSE}.", ""]
            continue
        pop = np.mean(values(sysd["popularity"], protocol, "ndcg@10")) if "popularity" in sysd and values(
            sysd["popularity"], protocol, "ndcg@10") else None
        rows = []
        for name, e in sysd.items():
            nd = values(e, protocol, "ndcg@10")
            if nd:
                rows.append([name + _fewer(nd, n), C.fmt_ms(nd), C.fmt_ms(values(e, protocol, "recall@10")),
                             C.fmt_ms(values(e, protocol, "hr@10")),
                             f"{np.mean(nd) / pop:.2f}" if pop else "–",
                             f"{np.mean(values(e, protocol, 'fit_s')):.1f}", e["config"]])
        rows.sort(key=lambda r: -float(r[1].split()[0]))
        users = next((r["users"] for e in sysd.values() for r in e["runs"]
                      if r["protocol"] == protocol and "users" in r), "?")
        missing = [name for name, e in sysd.items() if not values(e, protocol, "ndcg@10")]
        out += [f"## {TITLES[protocol]}", "",
                f"{n} folds; about {users} users per fold with a relevant (>= 4) held-out movie; candidates = movies "
                "not rated in training (cold: not among the 10 given). Rating models rank by predicted rating."
                + (f" No row (cannot score this protocol): {', '.join(missing)}." if missing else ""), "",
                C.md_table(["system", "NDCG@10", "Recall@10", "HR@10", "NDCG / popularity", "fit s",
                            "configuration"], rows), ""]
        if protocol == "latest":
            out += [f"Target for ours: mean NDCG@10 >= {TARGET_NDCG}.", ""]
        if protocol == "cold":
            out += ["Target for ours: above popularity.", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one fold per protocol")
    ap.add_argument("--split", choices=("evaluation", "tuning"), default="evaluation")
    ap.add_argument("--protocols", nargs="+", choices=P.PROTOCOLS, default=list(P.PROTOCOLS))
    ap.add_argument("--folds", type=int, default=None, help="folds per protocol (default bench.protocols.FOLDS)")
    ap.add_argument("--only", nargs="+", help="substrings of system names to run")
    ap.add_argument("--torch-threads", type=int, default=1, help="threads for torch/numba systems")
    ap.add_argument("--out", default=None, help="result file name (default accuracy)")
    ap.add_argument("--merge", nargs="+", metavar="JSON", help="render these runs' results (same split) as one "
                    "table set into bench/results/accuracy.md instead of running")
    args = ap.parse_args(argv)
    if args.merge:
        merged = merge([json.loads(Path(p).read_text()) for p in args.merge])
        C.save_part("accuracy", False, render(merged), merged)
        return
    res = run(args.split, args.protocols, 1 if args.quick else args.folds, args.only, args.torch_threads)
    text = render(res)
    partial = bool(args.quick or args.only or args.folds or args.split != "evaluation"
                   or len(args.protocols) < len(P.PROTOCOLS))
    if args.out:
        C.save_part(args.out, False, text, res)
    else:
        C.save_part("accuracy", partial, text, res)


if __name__ == "__main__":
    main()
