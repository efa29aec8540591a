"""Part 4 -- one PNG per part from the JSON the parts wrote (bench/results/*.json).

usage: python -m bench.plots [--quick]   (plots whatever results exist; says which are missing)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from bench import common as C


def _plt():  # noqa: ANN202
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def accuracy(res: dict, out: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.5))
    for ax, key, title, better in ((axes[0], "rmse", "RMSE, random 10 % held out", "lower"),
                                   (axes[1], "ndcg@10", "NDCG@10, latest 20 % per user held out", "higher")):
        names, means, sds = [], [], []
        for name, e in res["systems"].items():
            protocol = "random" if key == "rmse" else "latest"  # older results have no protocol: one per key
            vals = [r[key] for r in e["runs"] if key in r and r.get("protocol", protocol) == protocol]
            if vals:
                names.append(name)
                means.append(np.mean(vals))
                sds.append(np.std(vals, ddof=1) if len(vals) > 1 else 0.0)
        order = np.argsort(means)
        if better == "higher":
            order = order[::-1]
        colors = ["tab:red" if names[i].startswith("ours") else "tab:blue" for i in order]
        ax.barh([names[i] for i in order], [means[i] for i in order], xerr=[sds[i] for i in order], color=colors)
        ax.invert_yaxis()
        ax.set_title(f"{title} ({better} is better)")
        if key == "rmse" and means:
            ax.set_xlim(min(means) * 0.95, max(means) * 1.02)
        for i, idx in enumerate(order):
            ax.text(means[idx], i, f" {means[idx]:.3f}", va="center", fontsize=8)
    fig.suptitle(f"MovieLens 100K, mean ± sd over the folds of seeds {res['seeds']} (ours in red)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def speed(res: dict, out: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    systems = sorted({r["system"] for r in res["rows"]})
    colors = {s: f"C{i}" for i, s in enumerate(systems)}
    for system in systems:
        rows = sorted((r for r in res["rows"] if r["system"] == system and "error" not in r), key=lambda r: r["n"])
        if not rows:
            continue
        ns = [r["n"] for r in rows]
        if system != "data only":
            pts = [(r["n"], r["ratings_per_s"]) for r in rows if "ratings_per_s" in r]
            if pts:
                axes[0].plot(*zip(*pts, strict=True), marker="o", label=system, color=colors[system])
        axes[1].plot(ns, [r["peak_rss_mb"] for r in rows], marker="o", label=system, color=colors[system])
    axes[0].axhline(2e6, color="grey", linestyle=":", label="target: 2M ratings/s (ours, 2 cores)")
    axes[0].set(xscale="log", yscale="log", xlabel="ratings", ylabel="ratings / s per epoch",
                title="training throughput")
    axes[1].set(xscale="log", yscale="log", xlabel="ratings", ylabel="peak RSS (MB)", title="peak resident memory")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"synthetic MovieLens-shaped data, k={res['factors']}, one process per point")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _latency_bars(ax, rows: list[dict], bars: list[tuple[str, str, str]], labels: list[str], xlabel: str,
                  title: str) -> None:
    """Horizontal latency bars (log scale), one group per row, one bar per ``(key, color, label)``."""
    y = np.arange(len(rows))
    height = 0.8 / len(bars)
    for i, (key, color, label) in enumerate(bars):
        ax.barh(y + (i - (len(bars) - 1) / 2) * height, [r[key] for r in rows], height=height, color=color,
                label=label)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(True, axis="x", which="both", alpha=0.3)
    ax.legend(fontsize=8)


def _save(fig, out: Path, title: str) -> None:
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    _plt().close(fig)


def serving(res: dict, out: Path) -> None:
    plt = _plt()
    conns = sorted({r["connections"] for r in res["results"]})
    fig, axes = plt.subplots(1, len(conns), figsize=(7 * len(conns), 5.5), squeeze=False)
    for ax, c in zip(axes[0], conns, strict=True):
        rows = [r for r in res["results"] if r["connections"] == c]
        _latency_bars(ax, rows, [("p50_ms", "tab:green", "p50"), ("p90_ms", "tab:orange", "p90"),
                                 ("p99_ms", "tab:red", "p99")],
                      [f"{r['scenario']}\n{r['rps']:.0f} req/s" for r in rows], "latency (ms, log scale)",
                      f"{c} connection(s), {rows[0]['duration_s']:g} s each")
    _save(fig, out, "movierec serve (1 uvicorn worker) under wrk, beside a bare FastAPI endpoint")


def ann(res: dict, out: Path) -> None:
    """Per synthetic model: exact and ANN latency of each question (p50 and p99), recall@10 in the labels."""
    plt = _plt()
    parts = res["product"]
    fig, axes = plt.subplots(1, len(parts), figsize=(8 * len(parts), 5), squeeze=False)
    for ax, p in zip(axes[0], parts, strict=True):
        rows = p["rows"]
        _latency_bars(ax, rows, [("exact_p50_ms", "tab:gray", "exact p50"), ("exact_p99_ms", "silver", "exact p99"),
                                 ("ann_p50_ms", "tab:blue", "ANN p50"), ("ann_p99_ms", "lightsteelblue", "ANN p99")],
                      [f"{r['case']}\nrecall@10 {r['recall_at_10']:.3f}" for r in rows],
                      "latency per query (ms, log scale, one thread, in-process)",
                      f"{p['movies']:,} movies, {p['structure']} factors, build {p['build_s']:.0f} s")
    _save(fig, out, "exact scoring vs the ANN index (bench/ann.py)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="plot the *-quick results")
    args = ap.parse_args(argv)
    suffix = "-quick" if args.quick else ""
    for part, fn in (("accuracy", accuracy), ("speed", speed), ("serving", serving), ("ann", ann)):
        src = C.RESULTS / f"{part}{suffix}.json"
        if not src.is_file():
            print(f"{src.name}: missing, no plot (run `python -m bench.{part}{' --quick' if suffix else ''}`)")
            continue
        out = C.RESULTS / f"{part}{suffix}.png"
        fn(json.loads(src.read_text()), out)
        print(f"wrote {out.relative_to(C.ROOT)}")


if __name__ == "__main__":
    main()
