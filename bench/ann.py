"""The ANN index at a million movies: exact scoring and the index side by side, in one run.

usage: python -m bench.ann [--movies 1000000] [--structure trained iid] [--compare faiss hnswlib usearch] [--quick]
       [--out ann]

For each synthetic model (bench/synthetic.py ``factor_model``: ``trained`` has the spectrum of a
model trained on MovieLens 100K, ``iid`` has no structure at all), k=64:

1. the product's path: the model is published into a real store with its indexes
   (``movierec.ann_index.write_for_version``, what the trainer does), loaded and verified as the
   API does, then asked the API's questions by :class:`app.scoring.LoadedModel` (exact) and
   :class:`app.ann.AnnRanker` (the index), same queries: users NOT among those the index was tuned
   on, 150 rated movies excluded, with and without genre/year-like filters, and similar movies.
   Rows: recall@10 against exact, p50/p99 latency of each (one thread, in-process), build and
   verification time, index size and the process memory it added.
2. ``--compare``: the libraries considered (faiss IVF-Flat, hnswlib HNSW, usearch HNSW) on the
   same maximum-inner-product task (the Bao/Neyshabur reduction to L2), unfiltered: build time,
   memory, recall@10 and latency at several search settings.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from bench import common as C
from bench.synthetic import factor_model

WORK = C.RAW / "ann"
K = 64
RATED = 150  # movies a user has rated, excluded from their recommendations


def _rss_mb() -> float:
    gc.collect()
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _pct(times: list[float]) -> tuple[float, float]:
    a = np.asarray(times) * 1e3
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def _timed(fn: Callable[..., tuple[np.ndarray, np.ndarray]], *args: object) -> tuple[np.ndarray, float]:
    """The rows ``fn(*args)`` returns and the seconds it took."""
    t0 = time.perf_counter()
    rows, _ = fn(*args)
    return rows, time.perf_counter() - t0


# ---------------------------------------------------------------------------- the product's path


def product(movies: int, users: int, queries: int, structure: str) -> dict:
    """Publish, load, verify; then exact vs ANN on the API's questions."""
    from app.ann import AnnRanker
    from app.scoring import LoadedModel, UserVector
    from movierec import ann_index
    from movierec.store import ModelStore

    tensors = factor_model(movies, users + queries, K, seed=7, structure=structure)
    fresh = tensors["user_factors"][users:].copy()  # query users the index was not tuned on
    for name in ("user_ids", "user_factors", "user_bias"):
        tensors[name] = np.ascontiguousarray(tensors[name][:users])
    manifest = {"kind": "dot", "factors": K, "y_range": [0.0, 5.5], "rating_scale": [0.5, 5.0], "global_bias": 0.5,
                "counts": {"users": users, "movies": movies, "ratings": 0},
                "source": f"bench/ann.py synthetic factors ({structure})"}
    store_dir = WORK / f"store-{structure}"
    shutil.rmtree(store_dir, ignore_errors=True)
    t0 = time.perf_counter()
    version = ModelStore(store_dir).publish(
        tensors, manifest, extra_files=lambda d: ann_index.write_for_version(d, tensors, "dot", threads=os.cpu_count()))
    publish_s = time.perf_counter() - t0
    memory = _memory(store_dir, version)  # in a fresh process: this one has held and freed the build's arrays
    artifact = ModelStore(store_dir).load(version)
    model = LoadedModel(artifact)
    t0 = time.perf_counter()
    indexes = ann_index.load(artifact.path, artifact.manifest, version)
    verify_s = time.perf_counter() - t0
    ranker = AnnRanker(model, indexes)
    header = indexes.header
    index_bytes = sum((artifact.path / f).stat().st_size for f in ann_index.INDEX_FILES.values())

    rng = np.random.default_rng(3)
    everything = np.ones(movies, dtype=bool)
    masks = {"genre-like filter (30 % of movies)": rng.random(movies) < 0.30,
             "year-like filter (5 %)": rng.random(movies) < 0.05,
             "very selective filter (0.5 %)": rng.random(movies) < 0.005}
    cases: list[tuple[str, Callable[[int], np.ndarray]]] = [("/recommend, 150 rated excluded", lambda i: everything)]
    cases += [(f"/recommend, {name}", lambda i, m=m: m) for name, m in masks.items()]
    rows_out = []
    for name, base in cases:
        hits, ann_t, exact_t = 0, [], []
        for i in range(queries):
            user = UserVector(fresh[i], 0.0, "fold_in")
            allowed = base(i).copy()
            allowed[rng.choice(movies, RATED, replace=False)] = False
            got, t_ann = _timed(ranker.top_for_user, user, 10, allowed.copy())
            want, t_exact = _timed(model.top_for_user, user, 10, allowed.copy())
            assert allowed[got].all() and got.size == min(10, int(allowed.sum()))
            hits += len(set(got.tolist()) & set(want.tolist()))
            ann_t.append(t_ann)
            exact_t.append(t_exact)
        rows_out.append(_row(name, hits / (10 * queries), exact_t, ann_t))
    hits, ann_t, exact_t = 0, [], []
    for row in rng.choice(movies, queries, replace=False).tolist():
        got, t_ann = _timed(ranker.similar, row, 10, everything.copy())
        want, t_exact = _timed(model.similar, row, 10, everything.copy())
        hits += len(set(got.tolist()) & set(want.tolist()))
        ann_t.append(t_ann)
        exact_t.append(t_exact)
    rows_out.append(_row("/movies/{id}/similar", hits / (10 * queries), exact_t, ann_t))
    return {"structure": structure, "movies": movies, "users": users, "queries": queries, "rows": rows_out,
            "publish_s": publish_s, "build_s": header["build_seconds"], "verify_s": verify_s,
            "index_mb": index_bytes / 2**20, **memory,
            "indexes": {n: {k: v for k, v in e.items() if k in ("nprobe", "recall_at_10", "dims")}
                        for n, e in header["indexes"].items()}, "nlist": header["nlist"],
            "load_avg_1m": os.getloadavg()[0]}


_MEMORY_PROBE = """
import json, sys
from pathlib import Path
from bench.ann import _rss_mb
from app.scoring import LoadedModel
from movierec import ann_index
from movierec.store import ModelStore
base = _rss_mb()
artifact = ModelStore(Path(sys.argv[1])).load(int(sys.argv[2]))
model = LoadedModel(artifact)
loaded = _rss_mb()
indexes = ann_index.load(artifact.path, artifact.manifest, artifact.version)
print(json.dumps({"model_rss_mb": loaded - base, "index_rss_mb": _rss_mb() - loaded}))
"""


def _memory(store_dir: Path, version: int) -> dict[str, float]:
    """Resident memory a fresh process adds by loading the model (LoadedModel), then its indexes."""
    import json
    import subprocess

    out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(store_dir), str(version)], cwd=C.ROOT,
                         env={**os.environ, "PYTHONPATH": str(C.ROOT)}, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _row(name: str, recall: float, exact_t: list[float], ann_t: list[float]) -> dict:
    e50, e99 = _pct(exact_t)
    a50, a99 = _pct(ann_t)
    return {"case": name, "recall_at_10": recall, "exact_p50_ms": e50, "exact_p99_ms": e99, "ann_p50_ms": a50,
            "ann_p99_ms": a99, "speedup_p50": e50 / a50 if a50 else float("nan")}


# ------------------------------------------------------------------------- library comparison


def compare(movies: int, queries: int, libraries: list[str]) -> list[dict]:
    """Each library on the unfiltered MIPS task (Bao/Neyshabur reduction), same vectors and queries."""
    from movierec.ann_index import mips_items, mips_queries

    t = factor_model(movies, queries, K, seed=11, structure="trained")
    items, _ = mips_items(t["movie_factors"], t["rank_bias"])
    q = mips_queries(t["user_factors"])
    scores_top = [set(np.argpartition(-(t["movie_factors"] @ u + t["rank_bias"]), 10)[:10].tolist())
                  for u in t["user_factors"]]
    del t
    out = []
    for lib in libraries:
        rss0 = _rss_mb()
        t0 = time.perf_counter()
        search, settings = _build(lib, items, movies)
        build_s, mem = time.perf_counter() - t0, _rss_mb() - rss0
        for setting in settings:
            times, hits = [], 0
            for i in range(queries):
                t1 = time.perf_counter()
                found = search(q[i], setting)
                times.append(time.perf_counter() - t1)
                hits += len(scores_top[i] & set(found[:10].tolist()))
            p50, p99 = _pct(times)
            out.append({"library": lib, "setting": setting, "build_s": build_s, "memory_mb": mem,
                        "recall_at_10": hits / (10 * queries), "p50_ms": p50, "p99_ms": p99,
                        "load_avg_1m": os.getloadavg()[0]})
            print(f"  {lib:8s} {setting:>10s}  recall@10 {out[-1]['recall_at_10']:.3f}  build {build_s:6.1f} s  "
                  f"+{mem:5.0f} MB  p50 {p50:.2f} ms  p99 {p99:.2f} ms", flush=True)
        search = None  # type: ignore[assignment]
        gc.collect()
    return out


def _build(lib: str, items: np.ndarray, m: int) -> tuple[Callable[[np.ndarray, str], np.ndarray], list[str]]:
    threads = os.cpu_count() or 1
    if lib == "faiss":
        import faiss

        from movierec.ann_index import _train_ivf, default_nlist

        faiss.omp_set_num_threads(threads)
        index = _train_ivf(items, default_nlist(m), 0)
        faiss.omp_set_num_threads(1)

        def search(v: np.ndarray, setting: str) -> np.ndarray:
            index.nprobe = int(setting.split("=")[1])
            return index.search(v[None], 10)[1][0]
        return search, ["nprobe=32", "nprobe=64", "nprobe=128"]
    if lib == "hnswlib":
        import hnswlib

        h = hnswlib.Index("l2", items.shape[1])
        h.init_index(m, M=16, ef_construction=100)
        h.set_num_threads(threads)
        h.add_items(items)
        h.set_num_threads(1)

        def search(v: np.ndarray, setting: str) -> np.ndarray:
            h.set_ef(int(setting.split("=")[1]))
            return h.knn_query(v[None], 10)[0][0]
        return search, ["ef=128", "ef=256", "ef=512"]
    if lib == "usearch":
        from usearch.index import Index

        u = Index(ndim=items.shape[1], metric="l2sq", dtype="f32", connectivity=16, expansion_add=100)
        u.add(np.arange(m), items, threads=threads)

        def search(v: np.ndarray, setting: str) -> np.ndarray:
            u.expansion_search = int(setting.split("=")[1])
            return u.search(v, 10, threads=1).keys
        return search, ["ef=128", "ef=256", "ef=512"]
    raise SystemExit(f"unknown library {lib}")


# ------------------------------------------------------------------------------------ report


def render(info: dict) -> str:
    out = ["# ANN index at scale: exact scoring and the index side by side", "",
           f"Environment: {info['environment']}. Total run time {info['seconds']:.0f} s. Latencies: one query at a "
           "time, one thread, in-process (no HTTP), ms. Recall@10: share of the exact top 10 (same allowed movies) "
           f"that the index returned, over {info['product'][0]['queries'] if info['product'] else 0} query users "
           "the index was not tuned on.", ""]
    for p in info["product"]:
        idx = ", ".join(f"{n}: nprobe {v['nprobe']} of {p['nlist']} lists (sample recall {v['recall_at_10']:.3f})"
                        for n, v in p["indexes"].items())
        out += [f"## {p['movies']:,} movies, k={K}, `{p['structure']}` factors", "",
                f"Build (both indexes, tuning included) {p['build_s']:.1f} s within a publish of "
                f"{p['publish_s']:.1f} s; "
                f"verification on load {p['verify_s']:.1f} s; index files {p['index_mb']:.0f} MB, process memory "
                f"+{p['index_rss_mb']:.0f} MB for the indexes (the model itself +{p['model_rss_mb']:.0f} MB). {idx}. "
                f"Load average at the end {p['load_avg_1m']:.1f}.", "",
                C.md_table(["question", "recall@10", "exact p50", "exact p99", "ANN p50", "ANN p99",
                            "exact p50 / ANN p50"],
                           [[r["case"], f"{r['recall_at_10']:.3f}", f"{r['exact_p50_ms']:.2f}",
                             f"{r['exact_p99_ms']:.2f}", f"{r['ann_p50_ms']:.2f}", f"{r['ann_p99_ms']:.2f}",
                             f"{r['speedup_p50']:.1f}"] for r in p["rows"]]), ""]
    if info["compare"]:
        out += [f"## Libraries on the same task ({info['compare_movies']:,} movies, `trained` factors, unfiltered "
                "maximum inner product)", "",
                C.md_table(["library", "setting", "recall@10", "build s", "memory MB", "p50 ms", "p99 ms", "load"],
                           [[r["library"], r["setting"], f"{r['recall_at_10']:.3f}", f"{r['build_s']:.1f}",
                             f"{r['memory_mb']:.0f}", f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}",
                             f"{r['load_avg_1m']:.1f}"] for r in info["compare"]]), ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--movies", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--structure", nargs="+", choices=["trained", "iid"], default=["trained", "iid"])
    ap.add_argument("--compare", nargs="*", choices=["faiss", "hnswlib", "usearch"], default=[],
                    help="also compare these libraries (hnswlib and usearch: pip install hnswlib usearch)")
    ap.add_argument("--quick", action="store_true", help="50,000 movies, 100 queries")
    ap.add_argument("--out", default="ann", help="results as bench/results/OUT.md and OUT.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.movies, args.queries, args.users = 50_000, 100, 2_000
    WORK.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    info: dict = {"product": [], "compare": [], "compare_movies": args.movies}
    for structure in args.structure:
        print(f"{structure}: {args.movies:,} movies ...", flush=True)
        info["product"].append(product(args.movies, args.users, args.queries, structure))
        shutil.rmtree(WORK / f"store-{structure}", ignore_errors=True)
    if args.compare:
        print(f"libraries: {args.compare} at {args.movies:,} movies ...", flush=True)
        info["compare"] = compare(args.movies, args.queries, args.compare)
    info["environment"] = C.environment()
    info["seconds"] = time.perf_counter() - t0
    C.save_part(args.out, args.quick, render(info), info)


if __name__ == "__main__":
    main()
