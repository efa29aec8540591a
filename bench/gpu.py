"""Every GPU row in one run (about 10 minutes on one H200): the torch engine beside a plain PyTorch loop.

usage: python -m bench.gpu [--sizes 25e6 100e6] [--epochs 2] [--factors 50] [--skip-quality] [--ml100k DIR]

Rows, each size: the plain PyTorch reference loop of issue 19 (dense tables, fused Adam, batch
2^18; the default objective, then MSE alone), then ours (``trainer.fit.fit`` with the torch
engine on ``cuda``) with the same batch of 2^18 and (up to 25M ratings) with the trainer's default
batch (4,096), default objective and MSE alone. Ratings/s = ratings x epochs / seconds of the epochs after the
first (the first pays CUDA's and cuBLAS's start-up); peak GPU memory is
``torch.cuda.max_memory_allocated`` of the row. Then ML-100K quality, CUDA engine against the
numba engine (3 seeds, RMSE on a random 10 %, NDCG@10 on each user's latest 20 %; the issue's
tolerance is 0.003 / 0.005).

The synthetic data follows ``bench/synthetic.py`` (its shape, log-normal users, power-law movies,
rank-8 truth plus noise) but is drawn on the GPU, since numpy takes minutes for 100M ratings;
pairs are not de-duplicated (a few repeats change no timing).

Without a CUDA GPU it prints why and exits with status 2, measuring nothing. ``--smoke`` runs every
row on the CPU at 200K ratings instead (checks the script, measures nothing worth keeping; not saved).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

#: Batch of the issue's plain loop (and of our rows beside it).
BIG_BATCH = 1 << 18
NO_GPU_EXIT = 2
#: The trainer's default batch (4,096) runs only up to this size: at 100M ratings its 24K launch-bound
#: steps an epoch would take most of the 10 minutes.
SMALL_BATCH_MAX = 30_000_000


def synthetic(n: int, device, seed: int = 0):  # type: ignore[no-untyped-def]
    """(user, movie, rating) tensors on ``device`` and the shape, drawn as bench/synthetic.py describes."""
    import torch

    from bench.synthetic import shape_for

    n_users, n_movies = shape_for(n)
    g = torch.Generator(device).manual_seed(seed)
    pu = torch.empty(n_users, device=device).log_normal_(0.0, 1.0, generator=g)
    pm = (torch.arange(n_movies, device=device, dtype=torch.float32) + 10.0) ** -1.1
    pm = pm[torch.randperm(n_movies, device=device, generator=g)]
    user = torch.empty(n, dtype=torch.int64, device=device)
    movie = torch.empty(n, dtype=torch.int64, device=device)
    step = 1 << 24  # multinomial draws at most 2^24 samples a call
    for s in range(0, n, step):
        e = min(n, s + step)
        user[s:e] = torch.multinomial(pu, e - s, replacement=True, generator=g)
        movie[s:e] = torch.multinomial(pm, e - s, replacement=True, generator=g)
    rank = 8
    uf = torch.randn(n_users, rank, device=device, generator=g) * 0.35
    mf = torch.randn(n_movies, rank, device=device, generator=g) * 0.35
    ub = torch.randn(n_users, device=device, generator=g) * 0.4
    mb = torch.randn(n_movies, device=device, generator=g) * 0.5
    rating = torch.empty(n, device=device)
    for s in range(0, n, step):
        u, m = user[s:s + step], movie[s:s + step]
        r = 3.5 + ub[u] + mb[m] + (uf[u] * mf[m]).sum(1) + torch.randn(len(u), device=device, generator=g) * 0.8
        rating[s:s + step] = ((r * 2).round() / 2).clamp(0.5, 5.0)
    return user, movie, rating, n_users, n_movies


def _sync(device) -> None:  # type: ignore[no-untyped-def]
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_loop(user, movie, rating, n_users: int, n_movies: int,  # type: ignore[no-untyped-def]
               epochs: int, factors: int, softmax: bool) -> dict:
    """The issue's reference: dense tables, fused Adam, batch 2^18, sigmoid-ranged dot + biases with MSE,
    plus (``softmax``) a sampled softmax over 128 popularity-drawn negatives on a quarter of each batch."""
    import torch

    dev = user.device
    g = torch.Generator(dev).manual_seed(0)
    uf = torch.nn.Parameter(torch.randn(n_users, factors, device=dev, generator=g) * 0.01)
    mf = torch.nn.Parameter(torch.randn(n_movies, factors, device=dev, generator=g) * 0.01)
    ub, mb, rb = (torch.nn.Parameter(torch.zeros(k, device=dev)) for k in (n_users, n_movies, n_movies))
    opt = torch.optim.Adam([uf, mf, ub, mb, rb], lr=0.01, fused=dev.type == "cuda")
    q = torch.bincount(movie, minlength=n_movies).float().add_(1).sqrt_()
    q /= q.sum()
    log_q = torch.log(q * n_movies)
    mean = float(rating.mean())
    g0 = math.log((mean / 5.5) / (1 - mean / 5.5))
    n = user.shape[0]
    seconds = []
    for _ in range(epochs):
        _sync(dev)
        t0 = time.perf_counter()
        perm = torch.randperm(n, device=dev, generator=g)
        for s in range(0, n, BIG_BATCH):
            idx = perm[s:s + BIG_BATCH]
            u, m, y = user[idx], movie[idx], rating[idx]
            pu, pm = uf[u], mf[m]
            dot = (pu * pm).sum(1)
            pred = 5.5 * torch.sigmoid(dot + ub[u] + mb[m] + g0)
            loss = torch.nn.functional.mse_loss(pred, y)
            if softmax:
                r = len(idx) // 4
                j = torch.multinomial(q, 128, replacement=True, generator=g)
                x_neg = 2.0 * pu[:r] @ mf[j].t() + rb[j] - log_q[j]
                x_pos = 2.0 * dot[:r] + rb[m[:r]]
                ce = torch.logsumexp(torch.cat([x_pos[:, None], x_neg], 1), 1) - x_pos
                loss = loss + 0.45 * ce.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        _sync(dev)
        seconds.append(time.perf_counter() - t0)
    return {"epoch_s": seconds, "final_loss": float(loss)}


def ours(user, movie, rating, n_users: int, n_movies: int,  # type: ignore[no-untyped-def]
         epochs: int, factors: int, batch: int, softmax: bool) -> dict:
    """The trainer's own fit with the torch engine on the GPU (the data goes back to the CPU first: fit takes
    numpy arrays, and moves them to the GPU once)."""
    import numpy as np

    from trainer.data import Ratings
    from trainer.fit import FitParams, fit, resolve

    n = user.shape[0]
    data = Ratings(user.cpu().numpy().astype(np.int32), movie.cpu().numpy().astype(np.int32), rating.cpu().numpy(),
                   np.zeros(n, np.int64),
                   np.arange(n_users, dtype=np.int64), np.arange(n_movies, dtype=np.int64))
    params = dataclasses.replace(FitParams(), factors=factors, epochs=epochs, batch_size=batch, seed=0,
                                 rank_weight=FitParams().rank_weight if softmax else 0.0)
    t0 = time.perf_counter()
    _, history = fit(data, params, engine=resolve(user.device.type, "torch"))
    return {"epoch_s": history.seconds, "final_loss": history.loss[-1], "call_s": time.perf_counter() - t0}


def quality(ml100k: Path | None) -> dict:
    """ML-100K: CUDA engine against numba, 3 seeds (the issue's tolerance 0.003 RMSE / 0.005 NDCG@10).

    ``ml100k``: the MovieLens 100K directory; None: the test suite's cache (fetched there if absent,
    which needs the network)."""
    from functools import partial

    import numpy as np

    from movierec.data.fetch import fetch
    from trainer.data import load_files
    from trainer.fit import FitParams, fit, resolve
    from trainer.pipeline import evaluate

    data = load_files(ml100k or fetch("ml-100k", Path.home() / ".cache" / "movierec"))
    out: dict = {}
    for device, engine in (("cuda", "torch"), ("cpu", "numba")):
        fitter = partial(fit, engine=resolve(device, engine))
        runs = [evaluate(data, dataclasses.replace(FitParams(), seed=s), fitter=fitter)[0] for s in (1, 2, 3)]
        out[device] = {m: float(np.mean([r[m] for r in runs])) for m in ("rmse", "ndcg@10")}
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", type=float, default=[25e6, 100e6])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--factors", type=int, default=50)
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--ml100k", type=Path, help="MovieLens 100K directory (default: fetched into ~/.cache/movierec)")
    ap.add_argument("--smoke", action="store_true", help="every row on the CPU at 200K ratings (a check, not saved)")
    args = ap.parse_args(argv)
    import torch

    if args.smoke:
        args.sizes, args.skip_quality = [2e5], True
    elif not torch.cuda.is_available():
        why = "this torch build has no CUDA" if torch.version.cuda is None else "torch sees no GPU"
        print(f"bench/gpu.py: skipped, {why}; nothing measured (run it on a GPU host)", file=sys.stderr)
        raise SystemExit(NO_GPU_EXIT)
    from bench import common as C

    dev = torch.device("cpu" if args.smoke else "cuda")
    gpu = dev.type == "cuda"
    rows = []
    start = time.perf_counter()
    for n in (int(s) for s in args.sizes):
        data = synthetic(n, dev)
        print(f"{n:,} ratings on the GPU ({data[3]:,} users, {data[4]:,} movies)", flush=True)
        runs = [(f"plain PyTorch loop, {'default objective' if softmax else 'MSE only'}",
                 lambda d=data, s=softmax: plain_loop(*d, args.epochs, args.factors, s)) for softmax in (True, False)]
        for batch in (BIG_BATCH, 4096) if n <= SMALL_BATCH_MAX else (BIG_BATCH,):
            for softmax in (True, False):
                name = f"ours (torch engine), {'default objective' if softmax else 'MSE only'}, batch {batch:,}"
                runs.append((name, lambda d=data, b=batch, s=softmax: ours(*d, args.epochs, args.factors, b, s)))
        for name, run in runs:
            if gpu:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            try:
                r = run()
            except torch.OutOfMemoryError as exc:
                r = {"error": f"out of memory: {exc}"[:200]}
            r.update(system=name, n=n, peak_gpu_mb=torch.cuda.max_memory_allocated() / 2**20 if gpu else 0.0)
            timed = r.get("epoch_s", [])[1:] or r.get("epoch_s", [])
            if timed:
                r["ratings_per_s"] = n * len(timed) / sum(timed)
            rows.append(r)
            print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}), flush=True)
        del data
    result: dict = {"rows": rows, "environment": C.environment(), "gpu": torch.cuda.get_device_name() if gpu else "CPU",
                    "factors": args.factors, "epochs": args.epochs}
    if not args.skip_quality:
        try:
            result["quality"] = quality(args.ml100k)
        except Exception as exc:  # noqa: BLE001 - e.g. no network to fetch ML-100K: the speed rows still count
            result["quality_error"] = f"{exc.__class__.__name__}: {exc}"[:300]
            print(f"ML-100K quality not measured: {result['quality_error']}", file=sys.stderr)
    result["seconds"] = time.perf_counter() - start
    if args.smoke:
        print(render(result))
        return
    C.save_part("gpu", False, render(result), result)


def render(res: dict) -> str:
    from bench import common as C

    out = ["# GPU rows (bench/gpu.py)", "", f"{res['gpu']}; k = {res['factors']}; {res['epochs']} epochs, the first "
           f"not timed. Total {res['seconds']:.0f} s. Environment: {res['environment']}.", ""]
    table = []
    for r in res["rows"]:
        base = next((b for b in res["rows"] if b["n"] == r["n"] and b["system"].startswith("plain")
                     and ("MSE" in b["system"]) == ("MSE" in r["system"])), None)
        rate = r.get("ratings_per_s")
        ratio = f"{rate / base['ratings_per_s']:.2f}" if rate and base and base.get("ratings_per_s") else "–"
        table.append([f"{r['n']:,}", r["system"], f"{rate / 1e6:.2f}M" if rate else r.get("error", "–"), ratio,
                      f"{r['peak_gpu_mb']:.0f}", ", ".join(f"{s:.2f}" for s in r.get("epoch_s", []))])
    out += [C.md_table(["ratings", "system", "ratings/s", "× plain loop (same objective)", "peak GPU MB",
                        "epoch seconds"], table), ""]
    if "quality_error" in res:
        out += [f"ML-100K quality not measured: {res['quality_error']}", ""]
    if "quality" in res:
        q = res["quality"]
        out += [f"ML-100K, mean of 3 seeds: CUDA engine RMSE {q['cuda']['rmse']:.4f}, "
                f"NDCG@10 {q['cuda']['ndcg@10']:.4f}; numba RMSE {q['cpu']['rmse']:.4f}, NDCG@10 {q['cpu']['ndcg@10']:.4f} (tolerance 0.003 / 0.005).", ""]
    return "\n".join(out)


if __name__ == "__main__":
    main()
