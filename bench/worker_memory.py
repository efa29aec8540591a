"""Memory of ``movierec serve --workers N``: proportional set size (PSS) of the whole server.

PSS charges each resident page to the processes that map it in equal shares, so a model file
mapped by four workers counts once in their sum, while memory each worker holds privately counts
in full: the honest measure of what N workers cost the machine (RSS would count shared pages N
times over; USS would hide them). Read from ``/proc/<pid>/smaps_rollup`` of the server and each
of its worker processes, after every worker has loaded the model and answered requests. Each
worker's private memory is also broken down by mapping (``/proc/<pid>/smaps``): anonymous memory
(the interpreter's heap, numpy arrays, faiss's own allocations), the model's files, libraries.

usage: python -m bench.worker_memory DB_URL STORE [--workers 1 4] [--requests 200]
       python -m bench.worker_memory --setup DIR [--movies 1000000] [--workers 1 4]
(the second form builds the 1M-movie scenario in DIR first, or reuses the one already there;
bench/serving.py runs it on its 1M-movie scenario.)
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as C


def _proc_kib(path: str, key: str) -> int:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except OSError:
        pass
    return 0  # the process has gone


def pss_kib(pid: int) -> int:
    """PSS of one process in KiB."""
    return _proc_kib(f"/proc/{pid}/smaps_rollup", "Pss:")


def rss_kib(pid: int) -> int:
    """RSS of one process in KiB."""
    return _proc_kib(f"/proc/{pid}/status", "VmRSS:")


def private_by_mapping(pid: int) -> dict[str, float]:
    """Private memory (``Private_Clean + Private_Dirty``, MiB) of one process by what is mapped:
    ``anonymous`` (heap, numpy arrays, faiss's allocations, thread stacks), each file of the model
    store by its name (``model.safetensors``, ``ann-recommend.faiss``, ...), ``libraries`` (the
    ``.so`` files) and ``other files``. Private pages are what the process alone holds: the part
    that more workers multiply."""
    out: dict[str, float] = {}
    name = "anonymous"
    try:
        lines = Path(f"/proc/{pid}/smaps").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        head = line.split(None, 5)
        if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):  # a mapping's first line
            path = head[5].strip() if len(head) == 6 else ""
            if not path or path.startswith("["):
                name = "anonymous"
            elif ".so" in Path(path).name:
                name = "libraries"
            elif path.endswith((".safetensors", ".faiss", ".npy", ".bin")):
                name = Path(path).name
            else:
                name = "other files"
        elif head and head[0] in ("Private_Clean:", "Private_Dirty:"):
            out[name] = out.get(name, 0.0) + int(head[1]) / 1024
    return {k: round(v, 1) for k, v in sorted(out.items(), key=lambda kv: -kv[1])}


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (uvicorn's supervisor and workers)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def _wait_loaded(proc: subprocess.Popen, workers: int, timeout: float, log: Path) -> None:
    """Until ``workers`` worker processes exist and the server's PSS has not moved by more than
    1 % for 5 s (each worker has mapped the model and built its catalogue; the app's own log
    lines are not printed by uvicorn's worker processes, so they cannot be counted)."""
    t0, stable, last = time.perf_counter(), 0, 0
    while stable < 5:
        if proc.poll() is not None or time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"server with {workers} workers did not settle; see {log}")
        time.sleep(1.0)
        pids = process_tree(proc.pid)
        total = sum(pss_kib(pid) for pid in pids)
        enough = len(pids) >= (workers + 1 if workers > 1 else 1)
        stable = stable + 1 if enough and abs(total - last) <= 0.01 * max(total, 1) else 0
        last = total


def measure(env: dict[str, str], workers: int, log: Path, max_user: int, requests: int = 200,
            timeout: float = 600.0) -> dict:
    """Start a server with ``workers`` workers, wait until each has loaded the model, send
    ``requests`` GET /recommend, and return its PSS and RSS (MiB), in total and per process."""
    from bench.serving import MOVIEREC, free_port

    port = free_port()
    argv = [*MOVIEREC, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
            "--no-access-log"]
    with log.open("a") as fh:
        fh.write(f"$ {' '.join(argv)}\n")
        fh.flush()
        start = log.stat().st_size
        proc = subprocess.Popen(argv, cwd=C.ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
        try:
            t0 = time.perf_counter()
            _wait_loaded(proc, workers, timeout, log)
            url = f"http://127.0.0.1:{port}"
            while True:  # the workers load the model before they listen
                try:
                    with urllib.request.urlopen(f"{url}/ready", timeout=10) as r:
                        if r.status == 200:
                            break
                except OSError:
                    if proc.poll() is not None or time.perf_counter() - t0 > timeout:
                        raise RuntimeError(f"server with {workers} workers never ready; see {log}") from None
                    time.sleep(0.3)
            loaded_s = time.perf_counter() - t0
            for i in range(requests):  # new connections: the kernel spreads them over the workers
                user = 1 + (i * 7919) % max_user
                with urllib.request.urlopen(f"{url}/recommend?user_id={user}&n=10", timeout=60) as r:
                    assert r.status == 200
            time.sleep(1.0)
            pids = process_tree(proc.pid)
            per = {pid: (pss_kib(pid), rss_kib(pid)) for pid in pids}
            private = {pid: private_by_mapping(pid) for pid in pids}
        finally:
            proc.terminate()
            proc.wait(60)
    return {"workers": workers, "processes": len(pids), "loaded_s": loaded_s,
            "pss_mib": sum(p for p, _ in per.values()) / 1024, "rss_mib": sum(r for _, r in per.values()) / 1024,
            "per_process_pss_mib": sorted(round(p / 1024, 1) for p, _ in per.values()),
            # the largest process (a worker): its private memory by mapping
            "worker_private_mib": private[max(per, key=lambda pid: per[pid][0])]}


def setup_million(work: Path, log: Path, n_movies: int = 1_000_000, n_model_users: int = 100_000,
                  n_raters: int = 2000, n_ratings: int = 60_000) -> dict:
    """A SQLite database with a catalogue of ``n_movies`` synthetic movies and ``n_ratings`` ratings by
    ``n_raters`` users, and a ``dot`` model (k=64) of ``n_model_users`` users and every movie,
    published with its ANN indexes as the trainer does (``trained``-like factors; from 100,000
    movies, MOVIEREC_ANN_MIN_MOVIES's default, the server ranks through them). Reused when ``work``
    already holds this setup (``setup-<n_movies>.json``).

    The rows are inserted directly (sqlite3 executemany, after ``movierec db upgrade``): what is
    measured is the server's memory, not the import.
    """
    done = work / f"setup-{n_movies}.json"
    if done.exists():
        info = json.loads(done.read_text())
        info["store"] = Path(info["store"])
        if (info["store"] / "1" / "model.safetensors").exists() and info.get("ann"):
            return info
    work.mkdir(parents=True, exist_ok=True)
    import sqlite3

    import numpy as np

    from bench.serving import cli, env_for, publish_with_ann

    db = work / "million.db"
    store = work / "store-million"
    db.unlink(missing_ok=True)
    shutil.rmtree(store, ignore_errors=True)
    cli(["db", "upgrade"], env_for(f"sqlite:///{db}", store), log)
    t0 = time.perf_counter()
    genres = ["Action", "Comedy", "Drama", "Romance", "Sci-Fi", "Thriller"]
    rng = np.random.default_rng(11)
    with sqlite3.connect(db) as conn:
        conn.executemany("INSERT INTO movies (id, title, year, genres) VALUES (?, ?, ?, ?)",
                         ((i, f"Synthetic movie {i} ({1920 + i % 100})", 1920 + i % 100,
                           f"{genres[i % 6]}|{genres[(i // 6) % 6]}") for i in range(1, n_movies + 1)))
        pairs = {(int(u), int(m)) for u, m in zip(rng.integers(1, n_raters + 1, n_ratings),
                                                  rng.integers(1, n_movies + 1, n_ratings), strict=True)}
        conn.executemany("INSERT INTO ratings VALUES (?, ?, ?, ?)",
                         ((u, m, float(rng.integers(1, 11)) / 2, 1_000_000_000) for u, m in sorted(pairs)))
    header = publish_with_ann(store, np.arange(1, n_model_users + 1), n_movies, len(pairs), 1_000_000_000)
    version = store / "1"
    info = {"db_url": f"sqlite:///{db}", "store": str(store), "movies": n_movies, "model_users": n_model_users,
            "raters": n_raters, "ratings": len(pairs),
            "model_file_mib": (version / "model.safetensors").stat().st_size / 2**20,
            "ann": bool(header), "ann_files_mib": sum(p.stat().st_size for p in version.glob("*.faiss")) / 2**20,
            "setup_s": time.perf_counter() - t0}
    done.write_text(json.dumps(info, indent=1))
    info["store"] = store
    return info


def compare(work: Path, log: Path, workers: tuple[int, ...] = (1, 4), requests: int = 200,
            n_movies: int = 1_000_000) -> dict:
    """The 1M-movie setup, then :func:`measure` for each worker count; the rows and the setup."""
    from bench.serving import env_for

    setup = setup_million(work, log, n_movies=n_movies)
    env = env_for(setup["db_url"], setup["store"])
    rows = [measure(env, w, log, setup["raters"], requests) for w in workers]
    setup["store"] = str(setup["store"])
    return {"setup": setup, "rows": rows}


def render(result: dict) -> list[str]:
    """The worker-memory table (markdown lines) of :func:`compare`'s result."""
    setup, rows = result["setup"], result["rows"]
    one = rows[0]
    table = []
    for r in rows:
        workers_only = sum(sorted(r["per_process_pss_mib"])[-r["workers"]:])
        table.append([r["workers"], r["processes"], f"{r['pss_mib']:.0f}", f"{r['pss_mib'] / one['pss_mib']:.2f}",
                      f"{workers_only:.0f}", f"{r['rss_mib']:.0f}", f"{r['loaded_s']:.0f}",
                      " / ".join(f"{p:.0f}" for p in r["per_process_pss_mib"])])
    return [
        f"Model: `dot`, k=64, {setup['movies']:,} movies, {setup['model_users']:,} users (model file "
        f"{setup['model_file_mib']:.0f} MiB, ANN index files {setup.get('ann_files_mib', 0):.0f} MiB); SQLite catalogue of {setup['movies']:,} movies, {setup['ratings']:,} "
        f"ratings by {setup['raters']:,} users. PSS summed over the server's processes (uvicorn's supervisor "
        "included when there are several workers), after every worker loaded the model and "
        "the server answered 200 GET /recommend on new connections.", "",
        C.md_table(["workers", "processes", "PSS MiB", "× 1 worker", "PSS of the workers alone", "RSS MiB (sum)",
                    "s to load", "PSS per process"], table), "",
        "Private memory of one worker (the largest process) by mapping, MiB (`/proc/<pid>/smaps`, "
        "Private_Clean + Private_Dirty): " + "; ".join(
            f"{r['workers']} worker(s): " + ", ".join(f"{k} {v:.0f}" for k, v in r.get("worker_private_mib", {}).items()
                                                     if v >= 1) for r in rows), ""]


def main(argv: list[str] | None = None) -> None:
    from bench.serving import env_for

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("db_url", nargs="?")
    ap.add_argument("store", type=Path, nargs="?")
    ap.add_argument("--setup", type=Path, metavar="DIR", help="build (or reuse) the synthetic scenario in DIR")
    ap.add_argument("--movies", type=int, default=1_000_000, help="catalogue and model size with --setup")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--max-user", type=int, default=2000)
    args = ap.parse_args(argv)
    log = Path("/tmp") / f"worker-memory-{int(time.time())}.log"
    if args.setup is not None:
        result = compare(args.setup, log, tuple(args.workers), args.requests, n_movies=args.movies)
        result["setup"]["store"] = str(result["setup"]["store"])
        print(json.dumps(result, indent=1))
        print("\n".join(render(result)))
        return
    if args.db_url is None or args.store is None:
        ap.error("DB_URL and STORE, or --setup DIR")
    rows = [measure(env_for(args.db_url, args.store), w, log, args.max_user, args.requests) for w in args.workers]
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
