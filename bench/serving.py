"""Part 3 -- serving: the API under wrk, beside a bare FastAPI endpoint served the same way, same run.

usage: python -m bench.serving [--quick] [--duration 10] [--connections 1 16] [--skip-postgres]

Scenarios (each server is a separate ``movierec serve`` process, README defaults: 1 worker,
access log on; wrk runs as another process on 127.0.0.1 with 1 thread):

* bare:        ``python -m bench.bare_app`` (same ``uvicorn.run`` arguments), ``GET /const``
* 100K:        SQLite with MovieLens 100K imported by ``movierec import movielens``;
               ``GET /predict`` and ``GET /recommend?n=10`` for random known users/movies
* 60k movies:  SQLite with a synthetic catalogue of 60,000 movies and 300,000 ratings by 2,000 users
               (bench/synthetic.py) imported the same way; ``GET /recommend?n=10``, twice: a model of
               i.i.d. random factors (the server builds its index at load; such factors have no
               clusters, so the index would probe most of its lists and the request is scored
               exactly: app/ann.py FULL_SCAN_SHARE) and one of ``trained``-like factors published
               with its ANN indexes, as the trainer publishes (the index answers)
* worker memory: ``movierec serve --workers 1`` and ``--workers 4`` on a 1M-movie synthetic model and
               catalogue (bench/worker_memory.py): PSS of the server's processes; ``--skip-memory`` leaves it out
* POST /ratings: one rating per request (JSON) into SQLite and into a fresh PostgreSQL database
               (created, migrated and imported here, dropped afterwards), users outside the read set
* 1M movies:   SQLite with a synthetic catalogue of 1,000,000 movies and 100,000 ratings by 2,000
               users; the model has ``trained``-like factors (bench/synthetic.py ``factor_model``) and
               is published with its ANN indexes, as the trainer does. ``GET /recommend?n=10`` served
               twice from the same store: exact scoring (``MOVIEREC_ANN_MIN_MOVIES`` above the
               catalogue) and through the index (the default threshold); ``--skip-million`` leaves it out

The models served are synthetic factors of the right shape (k=64, the trainer's default; the
catalogue's real ids) published with ``movierec.store.ModelStore.publish``: serving cost depends
on the shapes, not on the values, and no training is needed. Each measurement is preceded by a
short unrecorded warm-up; each runs for a fixed duration at a fixed number of connections.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from bench import common as C

WORK = C.RAW / "serving"
WRK_DIR = Path(__file__).resolve().parent / "wrk"
PG_ADMIN = os.environ.get("MOVIEREC_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
K = 64
MOVIEREC = [sys.executable, "-c", "from cli import main; main()"]
TARGETS = {"predict_vs_bare": 0.70, "recommend_p99_100k_ms": 20.0, "recommend_p99_60k_ms": 50.0}


# ------------------------------------------------------------------------------------- set-up


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_for(db_url: str, store: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(C.ROOT), "MOVIEREC_DATABASE_URL": db_url,
            "MOVIEREC_MODEL_STORE": str(store), "MOVIEREC_RELOAD_INTERVAL": "0", "MOVIEREC_API_KEY": ""}


def cli(args: list[str], env: dict[str, str], log: Path) -> float:
    t0 = time.perf_counter()
    with log.open("a") as fh:
        fh.write(f"$ movierec {' '.join(args)}\n")
        fh.flush()
        subprocess.run([*MOVIEREC, *args], cwd=C.ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - t0


def publish_synthetic(store: Path, user_ids: np.ndarray, movie_ids: np.ndarray, n_ratings: int,
                      max_rated_at: int, seed: int = 0, item_neighbours: int = 0) -> int:
    """A ``dot`` model of random factors for these ids (k=64), published as the current version."""
    from movierec.store import ModelStore

    rng = np.random.default_rng(seed)
    n, m = len(user_ids), len(movie_ids)
    tensors = {
        "user_ids": np.asarray(user_ids, np.int64), "movie_ids": np.asarray(movie_ids, np.int64),
        "user_factors": rng.normal(0, 0.1, (n, K)).astype(np.float32),
        "movie_factors": rng.normal(0, 0.1, (m, K)).astype(np.float32),
        "user_bias": rng.normal(0, 0.1, n).astype(np.float32),
        "movie_bias": rng.normal(0, 0.1, m).astype(np.float32),
        "rank_bias": rng.normal(0, 0.1, m).astype(np.float32),
    }
    if item_neighbours > 0:  # an item-item term of the trainer's shape (trainer.itemitem): k neighbours a movie
        from movierec.item_term import ItemTerm

        k = min(item_neighbours, m)
        cols = np.sort(np.argsort(rng.random((m, m)), axis=1)[:, :k], axis=1) if m <= 5000 else \
            np.sort(rng.integers(0, m, (m, k)), axis=1)
        term = ItemTerm(np.arange(0, m * k + 1, k, dtype=np.int64), cols.ravel().astype(np.int32),
                        rng.normal(0, 0.05, m * k).astype(np.float32))
        tensors.update(term.tensors())
    manifest = {"kind": "dot", "factors": K, "y_range": [0.0, 5.5], "rating_scale": [0.5, 5.0], "global_bias": 0.5,
                "counts": {"users": n, "movies": m, "ratings": n_ratings},
                "data": {"ratings": n_ratings, "max_rated_at": int(max_rated_at)},
                "source": "bench/serving.py synthetic factors (serving benchmark only)"}
    return ModelStore(store).publish(tensors, manifest)


def setup_100k(db_url: str, store: Path | None, log: Path, plain_store: Path | None = None) -> dict:
    """Migrate ``db_url``, import MovieLens 100K; publish the model into ``store`` when given (with an item
    term of the trainer's shape) and the same factors without one into ``plain_store``."""
    folder, how = C.ml100k_dir()
    env = env_for(db_url, store or WORK / "unused-store")
    t = cli(["db", "upgrade"], env, log)
    t += cli(["import", "movielens", str(folder)], env, log)
    raw = np.loadtxt(folder / "u.data", dtype=np.int64, delimiter="\t")
    if store is not None:
        publish_synthetic(store, np.unique(raw[:, 0]), np.unique(raw[:, 1]), len(raw), int(raw[:, 3].max()),
                          item_neighbours=_item_neighbours())
    if plain_store is not None:  # the same factors without the item term: what the term costs
        publish_synthetic(plain_store, np.unique(raw[:, 0]), np.unique(raw[:, 1]), len(raw), int(raw[:, 3].max()))
    return {"users": int(raw[:, 0].max()), "movies": int(raw[:, 1].max()), "setup_s": t, "source": str(folder)}


def setup_60k(db_url: str, store: Path, log: Path, n_users: int = 2000, n_ratings: int = 300_000,
              n_movies: int = 60_000, ann: bool = False) -> dict:
    """A synthetic MovieLens CSV directory (``n_movies`` movies) imported with the product's importer.

    ``ann``: the model gets ``trained``-like factors and is published with its ANN indexes.
    """
    from bench.synthetic import generate

    d = generate(n_ratings, shape=(n_users, n_movies), seed=7)
    folder = WORK / f"synthetic-{n_movies}"
    folder.mkdir(parents=True, exist_ok=True)
    genres = ["Action", "Adventure", "Animation", "Comedy", "Crime", "Documentary", "Drama", "Fantasy", "Horror",
              "Romance", "Sci-Fi", "Thriller"]
    rng = np.random.default_rng(7)
    with (folder / "movies.csv").open("w") as fh:
        fh.write("movieId,title,genres\n")
        for mid in range(1, n_movies + 1):
            g = "|".join(sorted(set(rng.choice(genres, rng.integers(1, 4)).tolist())))
            fh.write(f"{mid},Synthetic movie {mid} ({1920 + mid % 100}),{g}\n")
    users, movies = d["user"].astype(np.int64) + 1, d["movie"].astype(np.int64) + 1
    ts = 1_000_000_000 + rng.integers(0, 10**8, len(users))
    with (folder / "ratings.csv").open("w") as fh:
        fh.write("userId,movieId,rating,timestamp\n")
        np.savetxt(fh, np.column_stack([users, movies, d["rating"], ts]), fmt=["%d", "%d", "%.1f", "%d"],
                   delimiter=",")
    env = env_for(db_url, store)
    t = cli(["db", "upgrade"], env, log)
    t += cli(["import", "movielens", str(folder)], env, log)
    info = {"users": n_users, "movies": n_movies, "setup_s": t, "ratings": len(users)}
    if ann:
        t0 = time.perf_counter()
        info["ann_header"] = publish_with_ann(store, np.unique(users), n_movies, len(users), int(ts.max()))
        info["publish_s"] = time.perf_counter() - t0
    else:
        publish_synthetic(store, np.unique(users), np.arange(1, n_movies + 1), len(users), int(ts.max()))
    return info


def publish_with_ann(store: Path, user_ids: np.ndarray, n_movies: int, n_ratings: int, max_rated_at: int) -> dict:
    """A ``dot`` model of ``trained``-like factors (k=64) published with its ANN indexes; returns their header."""
    from bench.synthetic import factor_model
    from movierec import ann_index
    from movierec.store import ModelStore

    tensors = factor_model(n_movies, int(user_ids.max()), K, seed=7, structure="trained")
    manifest = {"kind": "dot", "factors": K, "y_range": [0.0, 5.5], "rating_scale": [0.5, 5.0], "global_bias": 0.5,
                "counts": {"users": int(user_ids.max()), "movies": n_movies, "ratings": n_ratings},
                "data": {"ratings": n_ratings, "max_rated_at": int(max_rated_at)},
                "source": "bench/serving.py synthetic trained-like factors (serving benchmark only)"}
    built: dict = {}

    def extra(directory: Path) -> None:
        built.update(ann_index.write_for_version(directory, tensors, "dot", threads=os.cpu_count()).header)

    ModelStore(store).publish(tensors, manifest, extra_files=extra)
    return built


# --------------------------------------------------------------------------------- measuring


class Server:
    """A server process on a free port; stopped with SIGINT (uvicorn's graceful shutdown)."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path, probe: str, start_s: float = 120) -> None:
        self.port = free_port()
        self.argv = [*argv, "--port", str(self.port)]
        self.env, self.log, self.probe, self.start_s = env, log, probe, start_s

    def __enter__(self) -> Server:
        self.fh = self.log.open("a")
        self.proc = subprocess.Popen(self.argv, cwd=C.ROOT, env=self.env, stdout=self.fh, stderr=subprocess.STDOUT)
        deadline = time.time() + self.start_s
        url = f"http://127.0.0.1:{self.port}{self.probe}"
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.3)
        self.__exit__()
        raise RuntimeError(f"server not ready at {url} within {self.start_s:.0f} s; see {self.log}")

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.fh.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        return float("nan")
    v, unit = float(m.group(1)), m.group(2)
    return v * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def wrk(url: str, script: str, connections: int, duration: float, env: dict[str, str]) -> dict:
    """One wrk run (1 thread); parsed requests/s, latency percentiles (ms) and error counts."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency", "-s", str(WRK_DIR / script), url]
    p = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **env}, timeout=duration + 60)
    out = p.stdout
    res: dict = {"connections": connections, "duration_s": duration, "raw": out[-2000:]}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["rps"] = float(m.group(1)) if m else float("nan")
    m = re.search(r"(\d+) requests in", out)
    res["requests"] = int(m.group(1)) if m else 0
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        res[f"p{pct}_ms"] = _ms(m.group(1)) if m else float("nan")
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
    if p.returncode != 0:
        res["error"] = p.stderr[-500:]
    return res


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def writer_cpu_seconds(url: str) -> float:
    """The impression writer's CPU seconds so far (``movierec_impressions_writer_cpu_seconds_total``)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("movierec_impressions_writer_cpu_seconds_total "):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def measure(name: str, server: Server, script: str, env: dict[str, str], conns: list[int], duration: float,
            results: list[dict], warmup: float = 2.0, cpu: bool = False) -> None:
    """wrk against ``server`` for each connection count; with ``cpu``, also the server's CPU time per
    request (far less sensitive than throughput to other work on a shared machine), and the part of
    it the impression writer thread spent."""
    wrk(server.url, script, conns[-1], warmup, env)  # warm-up, not recorded
    for c in conns:
        if cpu:
            time.sleep(0.5)  # the warm-up's (or the last run's) impressions are written before we start
            writer_before = writer_cpu_seconds(server.url)
        before = cpu_seconds(server.proc.pid) if cpu else 0.0
        r = wrk(server.url, script, c, duration, env)
        if cpu and r["requests"]:
            time.sleep(0.5)  # background work the requests caused (the impression writer) lands too
            r["cpu_ms_per_request"] = 1000 * (cpu_seconds(server.proc.pid) - before) / r["requests"]
            r["writer_cpu_ms_per_request"] = 1000 * (writer_cpu_seconds(server.url) - writer_before) / r["requests"]
        r["scenario"] = name
        r["load_avg_1m"] = os.getloadavg()[0]
        results.append(r)
        print(f"  {name:28s} c={c:<3d} {r['rps']:9.1f} req/s  p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms"
              f"  non-2xx {r['non2xx']}  socket errors {r['socket_errors']}"
              + (f"  CPU {r['cpu_ms_per_request']:.3f} ms/request (writer {r['writer_cpu_ms_per_request']:.3f})"
                 if "cpu_ms_per_request" in r else ""), flush=True)


# ------------------------------------------------------------------------------------- driver


def run_million(serve: list[str], conns: list[int], duration: float, results: list[dict], info: dict,
                log: Path, n_movies: int = 1_000_000) -> None:
    """/recommend over a million movies: exact scoring, then the ANN index, same store and database."""
    print(f"setting up SQLite {n_movies:,} movies (catalogue import, model and ANN indexes) ...", flush=True)
    store = WORK / "store-1m"
    db = f"sqlite:///{WORK / 'synthetic1m.db'}"
    info["1m"] = s1m = setup_60k(db, store, log, n_users=2000, n_ratings=100_000, n_movies=n_movies, ann=True)
    wrk_env = {"MAX_USER": str(s1m["users"]), "SEED": "1"}
    label = "1M" if n_movies == 1_000_000 else f"{n_movies:,}"
    for name, threshold in ((f"GET /recommend ({label} movies, exact)", str(10**9)),
                            (f"GET /recommend ({label} movies, ANN)", str(min(100_000, n_movies)))):
        env = {**env_for(db, store), "MOVIEREC_ANN_MIN_MOVIES": threshold}
        t0 = time.perf_counter()
        with Server(serve, env, log, "/ready", start_s=900) as srv:
            s1m[f"start_s {name}"] = time.perf_counter() - t0
            measure(name, srv, "recommend.lua", wrk_env, conns, duration, results)


#: Rounds of the recording pair: both servers (recording off and on) run side by side and wrk
#: alternates between them, so the machine's drift is spread over both settings instead of being
#: charged to one.
RECORDING_ROUNDS = 2


def _item_neighbours() -> int:
    """Neighbours per movie of the item term the trainer's defaults publish."""
    from trainer.fit import defaults_for

    return defaults_for("dot").item_neighbours


def measure_recording(serve: list[str], db_url: str, store: Path, log: Path, env: dict[str, str], conns: list[int],
                      duration: float, results: list[dict], rounds: int = RECORDING_ROUNDS) -> None:
    """GET /recommend with impression recording off and on (MOVIEREC_RECORD_IMPRESSIONS), alternated."""
    variants = {state: ({"MOVIEREC_RECORD_IMPRESSIONS": "true" if state == "on" else "false"}, store)
                for state in ("off", "on")}
    measure_alternated("recording", variants, serve, db_url, log, env, conns, duration, results, rounds)


def measure_item_term(serve: list[str], db_url: str, store: Path, plain_store: Path, log: Path, env: dict[str, str],
                      conns: list[int], duration: float, results: list[dict], rounds: int = RECORDING_ROUNDS) -> None:
    """GET /recommend of the same model without and with its item-item term, alternated."""
    variants = {"off": ({}, plain_store), "on": ({}, store)}
    measure_alternated("item term", variants, serve, db_url, log, env, conns, duration, results, rounds)


def measure_alternated(what: str, variants: dict[str, tuple[dict[str, str], Path]], serve: list[str], db_url: str,
                       log: Path, env: dict[str, str], conns: list[int], duration: float, results: list[dict],
                       rounds: int) -> None:
    """GET /recommend under each variant (label -> extra server environment, model store), the servers
    started once and measured in turn over ``rounds``, so that the machine's drift hits every variant alike."""
    with contextlib.ExitStack() as stack:
        servers = {label: stack.enter_context(Server(serve, {**env_for(db_url, store), **extra}, log, "/ready"))
                   for label, (extra, store) in variants.items()}
        for _ in range(rounds):
            for label, srv in servers.items():
                measure(f"GET /recommend (100K, {what} {label})", srv, "recommend.lua", env, conns, duration,
                        results, cpu=True)


def rows_of(results: list[dict], connections: int, state: str, what: str = "recording") -> list[dict]:
    """The ``what``-{state} rows measured with ``connections``."""
    return [r for r in results if r["connections"] == connections and r["scenario"].endswith(f"{what} {state})")]


def recording_summary(results: list[dict], what: str = "recording") -> list[str]:
    """``what`` on against off: mean requests/s and p99 over the rounds, as ratios (target: within 10 %)."""
    lines = []
    for c in sorted({r["connections"] for r in results}):
        def mean(state: str, key: str, c: int = c) -> float:
            rows = [r.get(key, float("nan")) for r in rows_of(results, c, state, what)]
            return sum(rows) / len(rows) if rows else float("nan")
        off_rps, on_rps, off_p99, on_p99 = mean("off", "rps"), mean("on", "rps"), mean("off", "p99_ms"), mean("on", "p99_ms")
        off_cpu, on_cpu = mean("off", "cpu_ms_per_request"), mean("on", "cpu_ms_per_request")
        # Each round's own ratio (on against the off run next to it): their spread shows what the
        # machine's drift leaves of the mean ratio.
        pairs = [on.get("cpu_ms_per_request", float("nan")) / off.get("cpu_ms_per_request", float("nan"))
                 for off, on in zip(rows_of(results, c, "off", what), rows_of(results, c, "on", what))]
        spread = f" (rounds {min(pairs):.3f} to {max(pairs):.3f})" if len(pairs) > 1 else ""
        writer = mean("on", "writer_cpu_ms_per_request")
        if off_rps == off_rps and on_rps == on_rps:  # both measured (not NaN)
            lines.append(f"- {c} connection(s): {what} on / off = {on_rps / off_rps:.3f} × requests/s "
                         f"({on_rps:.0f} / {off_rps:.0f}), {on_p99 / off_p99:.3f} × p99 ({on_p99:.2f} / {off_p99:.2f} ms), "
                         f"{on_cpu / off_cpu:.3f} × server CPU per request ({on_cpu:.3f} / {off_cpu:.3f} ms){spread}, "
                         + (f"of which the impression writer {1000 * writer:.0f} us, " if writer > 0 else "")
                         + f"mean of {len(rows_of(results, c, 'on', what))} alternated rounds")
    return lines


def run(duration: float, conns: list[int], postgres: bool, only_recording: bool = False,
        rounds: int = RECORDING_ROUNDS, million: bool = True, only_million: bool = False,
        million_movies: int = 1_000_000, memory: bool = True, only_item_term: bool = False) -> dict:
    t_start = time.perf_counter()
    if WORK.exists():
        shutil.rmtree(WORK)
    WORK.mkdir(parents=True)
    log = WORK / "serving.log"
    results: list[dict] = []
    info: dict = {"notes": []}
    serve = [*MOVIEREC, "serve", "--host", "127.0.0.1", "--workers", "1"]
    bare = [sys.executable, "-m", "bench.bare_app", "--host", "127.0.0.1", "--workers", "1"]
    if only_million:
        bare_env = env_for(f"sqlite:///{WORK / 'unused.db'}", WORK / "unused-store")
        with Server(bare, bare_env, log, "/const") as srv:
            measure("bare FastAPI GET /const", srv, "bare.lua", {}, sorted({1, *conns}), duration, results)
        run_million(serve, sorted({1, *conns}), duration, results, info, log, million_movies)
        with Server(bare, bare_env, log, "/const") as srv:
            measure("bare FastAPI GET /const (again)", srv, "bare.lua", {}, sorted({1, *conns}), duration, results)
        return _finish(info, results, t_start)

    print("setting up SQLite 100K ...", flush=True)
    store100 = WORK / "store-100k"
    db100 = f"sqlite:///{WORK / 'ml100k.db'}"
    store100_plain = WORK / "store-100k-plain"
    info["100k"] = s100 = setup_100k(db100, store100, log, store100_plain)
    read_env = {"MAX_USER": str(s100["users"]), "MAX_MOVIE": str(s100["movies"]), "SEED": "1"}
    if only_recording or only_item_term:
        if only_recording:
            measure_recording(serve, db100, store100, log, read_env, conns, duration, results, rounds)
        if only_item_term:
            measure_item_term(serve, db100, store100, store100_plain, log, read_env, conns, duration, results, rounds)
        return _finish(info, results, t_start)
    print("setting up SQLite 60k movies ...", flush=True)
    store60 = WORK / "store-60k"
    info["60k"] = s60 = setup_60k(f"sqlite:///{WORK / 'synthetic60k.db'}", store60, log)
    store60t = WORK / "store-60k-trained"
    info["60k-trained"] = setup_60k(f"sqlite:///{WORK / 'synthetic60k-trained.db'}", store60t, log, ann=True)
    write_env = {"USER_BASE": "100000", "USER_SPAN": "10000", "MAX_MOVIE": str(s100["movies"]), "SEED": "2"}

    with Server(bare, env_for(db100, store100), log, "/const") as srv:
        measure("bare FastAPI GET /const", srv, "bare.lua", read_env, conns, duration, results)
    with Server(serve, env_for(db100, store100), log, "/ready") as srv:
        measure("GET /predict (100K)", srv, "predict.lua", read_env, conns, duration, results)
        measure("GET /recommend (100K)", srv, "recommend.lua", read_env, conns, duration, results)
        measure("POST /ratings (SQLite)", srv, "ratings.lua", write_env, conns, duration, results)
    measure_recording(serve, db100, store100, log, read_env, conns, duration, results)
    measure_item_term(serve, db100, store100, store100_plain, log, read_env, conns, duration, results)
    with Server(serve, env_for(f"sqlite:///{WORK / 'synthetic60k.db'}", store60), log, "/ready") as srv:
        measure("GET /recommend (60k movies)", srv, "recommend.lua",
                {"MAX_USER": str(s60["users"]), "SEED": "1"}, conns, duration, results)
    with Server(serve, env_for(f"sqlite:///{WORK / 'synthetic60k-trained.db'}", store60t), log, "/ready") as srv:
        measure("GET /recommend (60k movies, trained-like factors)", srv, "recommend.lua",
                {"MAX_USER": str(s60["users"]), "SEED": "1"}, conns, duration, results)
    if million:
        run_million(serve, sorted({1, *conns}), duration, results, info, log, million_movies)
    if postgres:
        pg_url = _pg_create()
        if pg_url is None:
            info["notes"].append(f"PostgreSQL at {PG_ADMIN} unreachable: POST /ratings (PostgreSQL) not measured")
        else:
            try:
                print("setting up PostgreSQL 100K ...", flush=True)
                info["pg"] = setup_100k(pg_url, None, log)
                with Server(serve, env_for(pg_url, store100), log, "/ready") as srv:
                    measure("POST /ratings (PostgreSQL)", srv, "ratings.lua", write_env, conns, duration, results)
            finally:
                _pg_drop(pg_url)
    if memory:
        print("worker memory, 1M movies ...", flush=True)
        from bench import worker_memory

        info["worker_memory"] = worker_memory.compare(WORK, log)
    # bare again at the end: how much did the machine drift during the run?
    with Server(bare, env_for(db100, store100), log, "/const") as srv:
        measure("bare FastAPI GET /const (again)", srv, "bare.lua", read_env, conns, duration, results)
    return _finish(info, results, t_start)


def _finish(info: dict, results: list[dict], t_start: float) -> dict:
    info["results"] = results
    info["environment"] = C.environment()
    info["seconds"] = time.perf_counter() - t_start
    return info


def _pg_create() -> str | None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"movierec_bench_{uuid.uuid4().hex[:10]}"
    try:
        eng = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with eng.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        eng.dispose()
    except Exception as exc:  # noqa: BLE001
        print(f"PostgreSQL unavailable: {exc}", flush=True)
        return None
    return make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)


def _pg_drop(url: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    eng = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with eng.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    eng.dispose()


def render(info: dict) -> str:
    res = info["results"]
    conns = sorted({r["connections"] for r in res})
    out = ["# Serving: requests/s and latency under wrk", "",
           "Server: `movierec serve --host 127.0.0.1 --workers 1` (README defaults: 1 uvicorn worker, access log on), "
           "SQLite unless stated. Load: `wrk -t1 -cN -dDs --latency` from another process on 127.0.0.1 (the "
           "2 cores are shared by wrk and the server). Baseline: a bare FastAPI endpoint returning a constant "
           "(`bench/bare_app.py`), served with the same `uvicorn.run` arguments in the same run; it is measured "
           "first and again last. Latencies in ms. Models: synthetic factors of the right shape (k=64).",
           f"Total run time {info['seconds']:.0f} s.", f"Environment: {info['environment']}.", ""]
    if "60k" in info:
        out.append(f"100K: MovieLens 100K imported from {info['100k']['source']}. 60k: synthetic catalogue of "
                   f"60,000 movies, {info['60k'].get('ratings', '?'):,} ratings by {info['60k']['users']:,} users; "
                   "'60k movies' serves a model of i.i.d. random factors (the server builds an index at load; the "
                   "index must probe most of its lists for such factors, so it is bypassed for exact scoring)")
        t = info.get("60k-trained", {}).get("ann_header", {})
        if t:
            idx = "; ".join(f"{n}: nprobe {e['nprobe']} of {t['nlist']} lists, sample recall@10 "
                            f"{e['recall_at_10']:.3f}" for n, e in t.get("indexes", {}).items())
            out[-1] += (f", '60k movies, trained-like factors' one of `trained`-like factors (bench/synthetic.py) "
                        f"published with its ANN indexes ({idx})")
        out[-1] += "."
        out.append("")
    if "1m" in info:
        m = info["1m"]
        h = m.get("ann_header", {})
        idx = "; ".join(f"{n}: nprobe {e['nprobe']} of {h['nlist']} lists, sample recall@10 {e['recall_at_10']:.3f}"
                        for n, e in h.get("indexes", {}).items())
        starts = ", ".join(f"{k.split(' ', 1)[1]} {v:.0f} s" for k, v in m.items() if k.startswith("start_s "))
        out += [f"1M: synthetic catalogue of {m['movies']:,} movies, {m['ratings']:,} ratings by {m['users']:,} users; "
                f"`trained`-like factors (bench/synthetic.py); ANN indexes built at publish in "
                f"{h.get('build_seconds', float('nan')):.0f} s ({idx}). Server start (catalogue, model, index "
                f"verification) until ready: {starts}. Recall of the index: bench/ann.py.", ""]
    for c in conns:
        rows = [r for r in res if r["connections"] == c]
        bare = [r["rps"] for r in rows if r["scenario"].startswith("bare")]
        b = bare[0] if bare else None
        table = []
        for r in rows:
            err = r["non2xx"] + r["socket_errors"]
            table.append([r["scenario"], f"{r['rps']:.0f}", f"{r['rps'] / b:.2f}" if b else "–",
                          f"{r['p50_ms']:.2f}", f"{r['p90_ms']:.2f}", f"{r['p99_ms']:.2f}", r["requests"],
                          err, f"{r['load_avg_1m']:.1f}"])
        out += [f"## {c} connection{'s' if c > 1 else ''}, {rows[0]['duration_s']:g} s each", "",
                C.md_table(["scenario", "requests/s", "× bare (first)", "p50", "p90", "p99", "requests",
                            "errors (non-2xx + socket)", "load avg 1 min after"], table), ""]
    out += ["Targets (issues): `/predict` throughput >= 0.70 × bare; `/recommend` at 16 connections >= 0.25 × bare "
            "on 100K and >= 0.15 × bare on 60k movies, p99 <= 25 ms on both (issue 17); 4 workers on a 1M-movie "
            "model <= 1.5 × the memory of one (PSS); `/recommend` p99 <= 20 ms at 1 connection over 1M movies (the ANN "
            "index).", ""]
    recording = recording_summary(res)
    if recording:
        out += ["Impression recording (issue 18 target: throughput and p99 within 10 % of recording off):", "",
                *recording, ""]
    item_term = recording_summary(res, "item term")
    if item_term:
        out += ["Item-item term of the ranking (issue 16 target: /recommend within 10 % of the same model without "
                "it; the trainer's neighbours per rated movie, MovieLens 100K users' real ratings):", "",
                *item_term, ""]
    if "worker_memory" in info:
        from bench import worker_memory

        out += ["## Worker memory", ""] + worker_memory.render(info["worker_memory"])
    out += [f"- {n}" for n in info["notes"]]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 s runs, 8 connections")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--connections", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--skip-postgres", action="store_true")
    ap.add_argument("--only-recording", action="store_true",
                    help="only GET /recommend with impression recording off and on (and no saved results)")
    ap.add_argument("--rounds", type=int, default=RECORDING_ROUNDS, help="alternated off/on rounds of recording")
    ap.add_argument("--only-item-term", action="store_true",
                    help="only GET /recommend without and with the item-item term (and no saved results)")
    ap.add_argument("--skip-memory", action="store_true", help="leave out the worker-memory comparison")
    ap.add_argument("--skip-million", action="store_true", help="leave out the 1M-movie scenario (several minutes)")
    ap.add_argument("--only-million", action="store_true", help="the bare endpoint and the 1M-movie scenario only")
    ap.add_argument("--million-movies", type=int, default=1_000_000, help="catalogue size of that scenario")
    args = ap.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install -y wrk")
    duration, conns = (3.0, [8]) if args.quick else (args.duration, args.connections)
    info = run(duration, conns, not args.skip_postgres, args.only_recording, args.rounds,
               million=not args.skip_million, only_million=args.only_million, million_movies=args.million_movies,
               memory=not (args.skip_memory or args.quick or args.only_recording or args.only_item_term),
               only_item_term=args.only_item_term)
    text = render(info)
    if args.only_recording or args.only_item_term:
        print(text)
        return
    C.save_part("serving-million" if args.only_million else "serving", args.quick, text, info)


if __name__ == "__main__":
    main()
