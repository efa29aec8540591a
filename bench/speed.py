"""Part 2 -- training speed and peak memory on synthetic MovieLens-shaped data (bench/synthetic.py).

usage: python -m bench.speed [--quick] [--sizes 1e6 5e6 25e6] [--surprise-max 5e6] [--factors 50]
                            [--torch-max 5e6] [--only SYSTEM ...]

Rows of ours: the numba engine (every core, 1 thread, the thread sweep 2/4/8/16 up to the core
count), the torch engine on the CPU and on CUDA (when torch sees a GPU; bench/gpu.py has every GPU
row), and a 2-process distributed job (torchrun, gloo, rows sharded, each process half the cores).

Every (system, size) runs in its own fresh Python process; its peak resident memory is that
child's ``ru_maxrss`` (``os.wait4`` on its pid: the per-child form of getrusage(RUSAGE_CHILDREN)),
so systems never share a heap. The "data only" row is the floor: the same interpreter with
numpy and torch imported and the rating arrays loaded, training nothing.

Ratings/s = ratings x epochs / seconds of the epochs, after the data is in memory: for
Surprise and the naive loop the training call, for ours the trainer's own epoch times (its
set-up -- positive weights, the packed rating records, compiled kernels loaded from numba's
cache -- is shown in the notes, as is Surprise's trainset construction).

Threads: Surprise's SGD is single-threaded. "ours dot" uses every core (``MOVIEREC_TRAIN_THREADS``
set to the core count: the trainer's own default also subtracts the load average, which the
previous row of this benchmark leaves behind), "ours dot, 1 thread" compares per core. The
torch baseline uses ``--torch-threads`` (default 0: torch's own choice, every core). Threads
that share a core with another busy process stall every parallel loop (see
``trainer.fit.default_threads``), so the load average is printed beside each row.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as C

OURS = {  # name: (threads, extra FitParams, engine as "device/engine"); threads 0 = every core
    "ours dot": (0, {}, "cpu/numba"),
    "ours dot, 1 thread": (1, {}, "cpu/numba"),
    "ours dot, every rating ranked": (0, {"rank_sample": 1.0}, "cpu/numba"),
    # the thread sweep (rows above the core count are skipped)
    **{f"ours dot, {t} threads": (t, {}, "cpu/numba") for t in (2, 4, 8, 16)},
    "ours dot, torch engine (CPU)": (0, {}, "cpu/torch"),
    "ours dot, torch engine (CUDA)": (0, {}, "cuda/torch"),
    # a distributed job on this machine: 2 processes (gloo), each with half the cores, rows sharded
    "ours dot, 2 processes (gloo)": (0, {}, "cpu/torch"),
}
#: Rows that are a torchrun job of this many processes.
DISTRIBUTED = {"ours dot, 2 processes (gloo)": 2}
#: Rows that need more than this machine may have: (what, test).
TORCH_ROWS = ("ours dot, torch engine (CPU)", "ours dot, torch engine (CUDA)", *DISTRIBUTED)
SYSTEMS = ("data only", *OURS, "naive torch sparse Adam bs 8192", "Surprise SVD")
NAIVE = "naive torch sparse Adam bs 8192"
REF = {  # quoted from the issue: 2 cores, 5M ratings, k=50 (not measured here)
    "Surprise SVD": "568k ratings/s, 1.8 GB", NAIVE: "515k ratings/s, 1.4 GB",
    "ours dot": "target >= 2M ratings/s at 5M and 25M, < 1 GB at 5M",
}


# ------------------------------------------------------------------------------------- workers


def _load(n: int) -> tuple[dict, int, int, object]:
    import numpy as np

    from bench.synthetic import load

    d = load(n)
    return d, int(d["n_users"]), int(d["n_movies"]), np


def worker(system: str, n: int, epochs: int, factors: int, threads: int = 0) -> dict | None:
    """One row's figures (None on the ranks other than 0 of a distributed row)."""
    if system in OURS:  # before torch and numba start their thread pools
        cores = os.cpu_count() or 1
        wanted = OURS[system][0] or max(1, cores // DISTRIBUTED.get(system, 1))
        os.environ["MOVIEREC_TRAIN_THREADS"] = str(wanted)
    import torch  # every worker imports torch, so the floors compare

    if threads > 0 and system not in OURS:
        torch.set_num_threads(threads)
    d, n_users, n_movies, np = _load(n)
    out: dict = {"system": system, "n": n, "epochs": epochs, "load_avg_1m_start": os.getloadavg()[0]}
    if system == "data only":
        return out
    if system in OURS:
        from trainer.data import Ratings
        from trainer.fit import FitParams, fit, resolve

        ratings = Ratings(d["user"], d["movie"], d["rating"], np.broadcast_to(np.int64(0), (n,)),
                          np.arange(n_users, dtype=np.int64), np.arange(n_movies, dtype=np.int64))
        params = FitParams(model="dot", factors=factors, epochs=epochs, seed=0, **OURS[system][1])
        out["config"] = {k: v for k, v in params.to_dict().items() if k not in ("y_range", "hidden")}
        device, kind = OURS[system][2].split("/")
        engine = resolve(device, kind)
        t0 = time.perf_counter()
        if system in DISTRIBUTED:
            import torch.distributed as dist

            from trainer.fit.sharded import sharded_fit

            dist.init_process_group("gloo")
            _, hist = sharded_fit(ratings, params, engine=engine)
            rank = dist.get_rank()
            dist.destroy_process_group()
            if rank:
                return None
        else:
            _, hist = fit(ratings, params, engine=engine)
        if device == "cuda":
            out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
        out["call_s"] = time.perf_counter() - t0
        out["train_s"] = sum(hist.seconds)
        out["setup_s"] = out["call_s"] - out["train_s"]
        out["epoch_s_trainer"] = list(hist.seconds)
        out["final_loss"] = hist.loss[-1]
        out["threads"] = hist.threads * hist.world_size
        out["engine"] = hist.engine + (f" x {hist.world_size} processes" if hist.world_size > 1 else "")
    elif system == NAIVE:
        out.update(_naive(d, n_users, n_movies, n, epochs, factors))
    elif system == "Surprise SVD":
        from surprise import SVD

        from bench.common import Triples
        from bench.systems import build_trainset

        t0 = time.perf_counter()
        trainset = build_trainset(Triples(d["user"], d["movie"], d["rating"], np.zeros(0), n_users, n_movies))
        out["build_s"] = time.perf_counter() - t0
        del d
        algo = SVD(n_factors=factors, n_epochs=epochs, random_state=0)
        t0 = time.perf_counter()
        algo.fit(trainset)
        out["train_s"] = time.perf_counter() - t0
        out["config"] = f"SVD(n_factors={factors}, n_epochs={epochs}), other defaults"
    else:
        raise SystemExit(f"unknown system {system}")
    out["ratings_per_s"] = n * epochs / out["train_s"]
    # after training: what the system actually used (Surprise's SGD is a single-threaded Cython loop)
    out.setdefault("threads", 1 if system == "Surprise SVD" else torch.get_num_threads())
    out["load_avg_1m_end"] = os.getloadavg()[0]
    return out


def _naive(d: dict, n_users: int, n_movies: int, n: int, epochs: int, factors: int) -> dict:
    """The textbook torch loop: sparse embeddings, SparseAdam, MSE, batch 8192."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    uf, mf = nn.Embedding(n_users, factors, sparse=True), nn.Embedding(n_movies, factors, sparse=True)
    ub, mb = nn.Embedding(n_users, 1, sparse=True), nn.Embedding(n_movies, 1, sparse=True)
    for e in (uf, mf):
        nn.init.normal_(e.weight, 0, 0.01)
    for e in (ub, mb):
        nn.init.zeros_(e.weight)
    params = [*uf.parameters(), *mf.parameters(), *ub.parameters(), *mb.parameters()]
    opt = torch.optim.SparseAdam(params, lr=0.01)
    users = torch.from_numpy(d["user"]).long()
    movies = torch.from_numpy(d["movie"]).long()
    ratings = torch.from_numpy(d["rating"])
    mu = float(ratings.mean())
    bs = 8192
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(n)
        total = 0.0
        for s in range(0, n, bs):
            idx = perm[s:s + bs]
            u, m, y = users[idx], movies[idx], ratings[idx]
            pred = (uf(u) * mf(m)).sum(1) + ub(u).squeeze(1) + mb(m).squeeze(1) + mu
            loss = nn.functional.mse_loss(pred, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(u)
    return {"train_s": time.perf_counter() - t0, "final_loss": total / n,
            "config": f"nn.Embedding(sparse=True) x4 (k={factors}), SparseAdam lr 0.01, MSE, batch {bs}"}


def run_child(system: str, n: int, epochs: int, factors: int, timeout: float, threads: int = 0) -> dict:
    """Run one worker in a fresh interpreter; its result plus its own peak RSS."""
    args = json.dumps({"system": system, "n": n, "epochs": epochs, "factors": factors, "threads": threads})
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
                     f"--nproc-per-node={DISTRIBUTED[system]}"] if system in DISTRIBUTED else [sys.executable])
        proc = subprocess.Popen([*launcher, "-m", "bench.speed", "--worker", args], cwd=C.ROOT, stdout=out,
                                stderr=err, env={**os.environ, "PYTHONPATH": str(C.ROOT),
                                                 # what `movierec train` sets (trainer/cli.py)
                                                 "GOMP_SPINCOUNT": os.environ.get("GOMP_SPINCOUNT", "100000")})
        deadline = t0 + timeout
        status = ru = None
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                _, status, ru = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        lines = [ln for ln in out.read().splitlines() if ln.startswith("{")]
        result = json.loads(lines[-1]) if lines and proc.returncode == 0 else {
            "system": system, "n": n, "error": f"exit {proc.returncode}" + (
                " (timed out)" if wall >= timeout else "") + ": " + err.read()[-600:]}
    result["peak_rss_mb"] = ru.ru_maxrss / 1024
    result["process_s"] = wall
    return result


# ------------------------------------------------------------------------------------- driver


def unavailable(system: str, n: int, torch_max: int) -> str | None:
    """Why ``system`` does not run at ``n`` ratings here (None: it runs)."""
    cores = os.cpu_count() or 1
    wanted = OURS.get(system, (0,))[0]
    if wanted > cores:
        return f"{system}: not run, this machine has {cores} cores"
    if system == "ours dot, torch engine (CUDA)":
        import torch

        if not torch.cuda.is_available():
            return f"{system}: not run, no CUDA GPU here (bench/gpu.py has every GPU row)"
    if system in TORCH_ROWS and "CUDA" not in system and n > torch_max:
        return (f"{system} at {n:,} ratings: not run (--torch-max {torch_max:,}); the torch engine on a CPU is the "
                "GPU's code path for tests, several times slower than numba there")
    if system in DISTRIBUTED and DISTRIBUTED[system] > cores:
        return f"{system}: not run, fewer cores than processes"
    return None


def run(sizes: list[int], surprise_max: int, factors: int, timeout: float, threads: int = 0,
        torch_max: int = 5_000_000) -> dict:
    from bench.synthetic import cached, shape_for

    t_start = time.perf_counter()
    res: dict = {"sizes": sizes, "factors": factors, "rows": [], "skipped": [], "torch_threads": threads}
    why = None
    try:
        import trainer.fit  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        why = f"{exc.__class__.__name__}: {exc}"
    for n in sizes:
        with C.Timer() as t:
            cached(n)
        print(f"data {n}: {shape_for(n)} (users, movies); ready in {t.seconds:.1f} s", flush=True)
        epochs = 2 if n <= 5_000_000 else 1
        for system in SYSTEMS:
            if system in OURS and why:
                res["skipped"].append(f"ours at {n}: trainer not importable ({why})")
                continue
            why_not = unavailable(system, n, torch_max)
            if why_not:
                if why_not not in res["skipped"]:
                    res["skipped"].append(why_not)
                continue
            if system == "Surprise SVD" and n > surprise_max:
                res["skipped"].append(
                    f"Surprise SVD at {n:,} ratings: not run (--surprise-max {surprise_max:,}); its Python trainset "
                    f"(dicts of tuples) is built in one process and, by the 5M row, would need several GB and minutes "
                    "of the 30-minute budget")
                continue
            r = run_child(system, n, epochs, factors, timeout, threads)
            res["rows"].append(r)
            shown = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items() if k != "config"}
            print(f"  {shown}", flush=True)
    res["environment"] = C.environment()
    res["seconds"] = time.perf_counter() - t_start
    return res


def _fmt_rate(x: float) -> str:
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.0f}k"


def render(res: dict) -> str:
    from bench.synthetic import shape_for

    rows = res["rows"]
    out = ["# Training speed and peak memory (synthetic MovieLens-shaped data)", "",
           f"k = {res['factors']} factors for every system. Each cell is one run of the system in its own process, "
           "all in the same session on the same machine; ratios compare systems of the same size in this run. "
           f"Total run time {res['seconds']:.0f} s.", f"Environment: {res['environment']}.", ""]
    table = []
    for n in res["sizes"]:
        at = {r["system"]: r for r in rows if r["n"] == n}
        floor = at.get("data only", {}).get("peak_rss_mb")
        svd = at.get("Surprise SVD", {}).get("ratings_per_s")
        nv = at.get(NAIVE, {}).get("ratings_per_s")
        for system in SYSTEMS:
            r = at.get(system)
            if r is None:
                continue
            if "error" in r:
                table.append([f"{n:,}", system, "error", "", "", "", f"{r['peak_rss_mb']:.0f}", "", "", "", "",
                              r["error"][:80].replace("|", "/").replace("\n", " ")])
                continue
            rate = r.get("ratings_per_s")
            above = r["peak_rss_mb"] - floor if floor is not None and system != "data only" else None
            extra = f"trainset build {r['build_s']:.1f} s" if "build_s" in r else ""
            load = f"{r['load_avg_1m_start']:.1f} → {r['load_avg_1m_end']:.1f}" if "load_avg_1m_end" in r else ""
            if "epoch_s_trainer" in r:
                extra = ("epochs " + ", ".join(f"{s:.2f}" for s in r["epoch_s_trainer"])
                         + f" s; set-up {r['setup_s']:.1f} s; {r.get('engine', '')}"
                         + (f"; peak GPU {r['peak_gpu_mb']:.0f} MB" if "peak_gpu_mb" in r else ""))
            table.append([
                f"{n:,}", system, r["epochs"] if rate else "–",
                f"{r['train_s'] / r['epochs']:.2f}" if rate else "–",
                _fmt_rate(rate) if rate else "–",
                f"{rate / svd:.2f}" if rate and svd else "–",
                f"{r['peak_rss_mb']:.0f}",
                f"{above:.0f}" if above is not None else "–",
                f"{above * 2**20 / n:.0f}" if above is not None else "–",
                r.get("threads", "") if rate else "", load, extra])
            if rate and nv:
                table[-1][5] += f" / {rate / nv:.2f}"
    out += [C.md_table(["ratings", "system", "epochs timed", "s / epoch", "ratings/s",
                        "× Surprise SVD / × naive torch", "peak RSS MB", "above data-only floor MB",
                        "bytes / rating above floor", "threads", "load avg 1 min (start → end)", "notes"], table),
            "", "Surprise is single-threaded (Cython); the others use the thread count shown. The load average "
            "column shows how busy the shared machine was while each row ran. Ours trains the ranking term on "
            "a quarter of each batch once an epoch has more than 1M ratings (rank_sample; every rating below "
            "that, so ML-100K and ML-1M-sized data are unaffected); the 'every rating ranked' row shows its cost.",
            ""]
    out += ["Shapes (users, movies): " + "; ".join(f"{n:,}: {shape_for(n)}" for n in res["sizes"]) + ".", ""]
    out += ["Reference figures quoted in the issue (2 cores, 5M ratings, k=50; not measured here): "
            + "; ".join(f"{k}: {v}" for k, v in REF.items()) + ".", ""]
    for r in rows:
        if r["system"] == "ours dot" and "config" in r:
            out.append(f"- ours dot configuration (the trainer's defaults, k and epochs aside): {r['config']}; "
                       "'every rating ranked' sets rank_sample=1.0")
            break
    seen = set()
    for r in rows:
        if r["system"] not in seen and "config" in r and r["system"] not in OURS:
            seen.add(r["system"])
            out.append(f"- {r['system']} configuration: {r['config']}")
    out += [f"- {s}" for s in res["skipped"]]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="sizes 200k and 1M")
    ap.add_argument("--sizes", nargs="+", type=float, default=[1e6, 5e6, 25e6])
    ap.add_argument("--surprise-max", type=float, default=5e6, help="largest size Surprise SVD runs at")
    ap.add_argument("--factors", type=int, default=50)
    ap.add_argument("--timeout", type=float, default=600, help="seconds per (system, size) process")
    ap.add_argument("--torch-max", type=float, default=5e6,
                    help="largest size the torch engine on the CPU (and the distributed job) runs at")
    ap.add_argument("--only", nargs="+", help="run only these systems (names as in the table)")
    ap.add_argument("--torch-threads", type=int, default=0,
                    help="threads of the naive torch loop (default 0: torch's own choice, every core)")
    args = ap.parse_args(argv)
    if args.worker:
        a = json.loads(args.worker)
        row = worker(a["system"], a["n"], a["epochs"], a["factors"], a.get("threads", 0))
        if row is not None:
            print(json.dumps(row), flush=True)
        return
    sizes = [200_000, 1_000_000] if args.quick else [int(s) for s in args.sizes]
    global SYSTEMS
    if args.only:
        SYSTEMS = tuple(s for s in SYSTEMS if s in args.only)
    res = run(sizes, int(args.surprise_max), args.factors, args.timeout, args.torch_threads, int(args.torch_max))
    text = render(res)
    C.save_part("speed", args.quick, text, res)


if __name__ == "__main__":
    main()
