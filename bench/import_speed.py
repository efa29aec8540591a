"""Import and read speed: the binary-COPY importer and page-range reader against the previous ones, in one run.

    python bench/import_speed.py --ratings 5000000 [--headline 25000000] [--backends sqlite postgresql]

For each size in ``--ratings`` a synthetic ml-25m-shaped set (``movies.csv`` + ``ratings.csv``)
is imported into a fresh database per backend, once with the previous importer
(bench/legacy_import.py) and once with the current one, then imported again (nothing changes:
the idempotent path). On PostgreSQL the trainer's read of every rating is timed with the
previous reader (SQLAlchemy stream) and the current one (server-packed page ranges). The
``--headline`` size runs the current importer and reader only, into PostgreSQL. Every timing is
printed with the load average (``os.getloadavg``) at its start and end: our machines are shared.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from sqlalchemy import text
from sqlalchemy.engine import make_url

from bench import legacy_import
from bench.common import RESULTS
from migrations import upgrade
from movierec.data.importer import ImportResult, import_movielens
from movierec.db.engine import make_engine
from movierec.db.ratings_reader import read_all
from trainer.data import load_db


def write_set(directory: Path, n_ratings: int, n_movies: int, seed: int = 0) -> None:
    """A ml-25m-shaped CSV set: ~150 ratings a user, power-law movie popularity, half stars, and like
    MovieLens, each (user, movie) pair once, lines sorted by user then movie."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "movies.csv").open("w") as fh:
        fh.write("movieId,title,genres\n")
        fh.writelines(f"{m},Movie {m} ({1950 + m % 70}),Drama|Comedy\n" for m in range(1, n_movies + 1))
    n_users = max(1, n_ratings // 150)
    popularity = 1.0 / np.arange(1, n_movies + 1) ** 0.8
    popularity /= popularity.sum()
    users_per_block = max(1, n_users // max(1, n_ratings // 2_000_000))
    with (directory / "ratings.csv.tmp").open("w") as fh:
        fh.write("userId,movieId,rating,timestamp\n")
        for first in range(1, n_users + 1, users_per_block):  # users in disjoint ranges: pairs unique overall
            last = min(first + users_per_block, n_users + 1)
            size = round(n_ratings * (last - 1) / n_users) - round(n_ratings * (first - 1) / n_users)
            # Draw until there are `size` distinct pairs, keep exactly that many: n_ratings lines in all.
            key = np.zeros(0, np.int64)
            while len(key) < size:
                users = rng.integers(first, last, int((size - len(key)) * 1.2) + 10)
                movies = rng.choice(n_movies, len(users), p=popularity) + 1
                key = np.unique(np.concatenate([key, users.astype(np.int64) * (n_movies + 1) + movies]))
            key = np.sort(rng.choice(key, size, replace=False))
            stars = rng.integers(1, 11, len(key)) / 2
            stamps = rng.integers(789_652_009, 1_574_327_703, len(key))
            rows = np.column_stack([key // (n_movies + 1), key % (n_movies + 1), stars, stamps]).tolist()
            for start in range(0, len(rows), 100_000):  # one C-level format per 100k rows
                part = rows[start:start + 100_000]
                fh.write(("%d,%d,%.1f,%d\n" * len(part)) % tuple(v for row in part for v in row))
    (directory / "ratings.csv.tmp").rename(directory / "ratings.csv")


def fresh_database(backend: str, workdir: Path, admin_url: str) -> tuple[str, Callable[[], None]]:
    """A migrated, empty database and the function that removes it."""
    if backend == "sqlite":
        url = f"sqlite:///{workdir / f'{uuid.uuid4().hex}.db'}"
        upgrade(url)
        return url, lambda: None
    name = f"movierec_bench_{uuid.uuid4().hex[:10]}"
    admin = make_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    return url, drop


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg()[:2])


def timed(label: str, run: Callable[[], object]) -> tuple[float, object, str]:
    """Run, print and return (seconds, result, "load before -> after")."""
    before = load()
    started = time.perf_counter()
    value = run()
    seconds = time.perf_counter() - started
    loads = f"{before} -> {load()}"
    print(f"  {label:42} {seconds:8.1f} s   (load 1/5 min {loads})", flush=True)
    return seconds, value, loads


def import_into(backend: str, workdir: Path, admin_url: str, data: Path, importer: Callable[..., ImportResult],
                again: bool, read: bool, legacy_read: bool, trainer_load: bool = False) -> dict[str, object]:
    url, drop = fresh_database(backend, workdir, admin_url)
    out: dict[str, object] = {}
    try:
        engine = make_engine(url)
        name = "previous" if importer is legacy_import.import_movielens else "binary COPY"
        out["seconds"], result, out["load"] = timed(f"{backend} import ({name})", lambda: importer(engine, data))
        out["read"] = result.ratings_read  # type: ignore[attr-defined]
        if again:
            out["again"], second, _ = timed(f"{backend} import again (nothing changes)", lambda: importer(engine, data))
            assert second.ratings_inserted + second.ratings_updated == 0, second.summary()  # type: ignore[attr-defined]
        if read:
            out["read_s"], columns, out["read_load"] = timed("postgresql read (page ranges)", lambda: read_all(engine))
            out["rows"] = len(columns)  # type: ignore[arg-type]
        if read and trainer_load:
            out["load_s"], _, _ = timed("trainer load_db (read + canonical arrays)", lambda: load_db(url))
        if legacy_read:
            out["legacy_read_s"], columns, _ = timed("postgresql read (previous stream)",
                                                     lambda: legacy_import.read_all(engine))
            assert len(columns) == out["rows"]  # type: ignore[arg-type]
        engine.dispose()
    finally:
        drop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ratings", type=int, nargs="*", default=[1_000_000], help="side-by-side sizes")
    parser.add_argument("--headline", type=int, default=None, help="one size, current importer and reader only")
    parser.add_argument("--movies", type=int, default=60_000)
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument("--workdir", type=Path, default=None, help="keep generated sets here between runs")
    parser.add_argument("--postgres-url", default=os.environ.get(
        "MOVIEREC_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="movierec-import-") as tmp:
        workdir = args.workdir or Path(tmp)
        sides, reads, headline = [], [], None
        for n in args.ratings:
            data = workdir / f"set-{n}-{args.movies}"
            if not (data / "ratings.csv").is_file():
                timed(f"writing {n:,} ratings", lambda: write_set(data, n, args.movies))  # noqa: B023
            print(f"{n:,} ratings:", flush=True)
            for backend in args.backends:
                pg = backend == "postgresql"
                old = import_into(backend, workdir, args.postgres_url, data, legacy_import.import_movielens,
                                  again=False, read=False, legacy_read=False)
                new = import_into(backend, workdir, args.postgres_url, data, import_movielens,
                                  again=True, read=pg, legacy_read=pg)
                sides.append((backend, new["read"], old, new))
                if pg:
                    reads.append((new["rows"], new["legacy_read_s"], new["read_s"], new["read_load"]))
        if args.headline:
            data = workdir / f"set-{args.headline}-{args.movies}"
            if not (data / "ratings.csv").is_file():
                timed(f"writing {args.headline:,} ratings", lambda: write_set(data, args.headline, args.movies))
            print(f"{args.headline:,} ratings (headline):", flush=True)
            headline = import_into("postgresql", workdir, args.postgres_url, data, import_movielens,
                                   again=False, read=True, legacy_read=False, trainer_load=True)
    report = tables(sides, reads, headline)
    print("\n" + report)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "import_speed.md").write_text(report + "\n", encoding="utf-8")
    results = {"sides": [{"backend": b, "ratings": n, "previous": o, "current": c} for b, n, o, c in sides],
               "reads": [dict(zip(("rows", "previous_s", "current_s", "load"), r, strict=True)) for r in reads],
               "headline": headline}
    (RESULTS / "import_speed.json").write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    plot(results, RESULTS / "import_speed.png")


def tables(sides: list, reads: list, headline: dict | None) -> str:
    """The Markdown tables of one run."""
    lines = ["| backend | ratings | previous import | rows/s | binary COPY import | rows/s | speed-up "
             "| import again (no change) | load 1/5 min |", "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for backend, n, old, new in sides:
        lines.append(f"| {backend} | {n:,} | {old['seconds']:.1f} s | {n / old['seconds']:,.0f} | {new['seconds']:.1f} s "
                     f"| {n / new['seconds']:,.0f} | {old['seconds'] / new['seconds']:.1f}x | {new['again']:.1f} s "
                     f"| {new['load']} |")
    if reads:
        lines += ["", "| ratings read by the trainer (PostgreSQL) | previous stream | page ranges | speed-up "
                  "| load 1/5 min |", "|---:|---:|---:|---:|---|"]
        lines += [f"| {rows:,} | {old_s:.1f} s | {new_s:.1f} s | {old_s / new_s:.1f}x | {loads} |"
                  for rows, old_s, new_s, loads in reads]
    if headline:
        n = headline["read"]
        lines += ["", f"Headline: {n:,} ratings into PostgreSQL in {headline['seconds']:.1f} s "
                  f"({n / headline['seconds']:,.0f}/s, load {headline['load']}); {headline['rows']:,} read back by "
                  f"the trainer's reader in {headline['read_s']:.1f} s (load {headline['read_load']}); the trainer's whole "
                  f"`load_db` (read, then ids made dense and rows put in canonical order) {headline['load_s']:.1f} s."]
    return "\n".join(lines)


def plot(results: dict, out: Path) -> None:
    """Ratings/s of both importers per backend and size, and read times: bars side by side."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    labels = [f"{s['backend']}\n{s['ratings']:,}" for s in results["sides"]]
    x = np.arange(len(labels))
    for offset, key, name in ((-0.2, "previous", "previous importer"), (0.2, "current", "binary COPY importer")):
        left.bar(x + offset, [s["ratings"] / s[key]["seconds"] for s in results["sides"]], 0.4, label=name)
    left.set_xticks(x, labels)
    left.set_ylabel("ratings imported per second")
    left.set_title("Import (fresh database)")
    left.legend()
    reads = results["reads"]
    x = np.arange(len(reads))
    right.bar(x - 0.2, [r["previous_s"] for r in reads], 0.4, label="previous stream")
    right.bar(x + 0.2, [r["current_s"] for r in reads], 0.4, label="page ranges")
    right.set_xticks(x, [f"{r['rows']:,}" for r in reads])
    right.set_ylabel("seconds")
    right.set_title("Trainer's read of every rating (PostgreSQL)")
    right.legend()
    fig.suptitle("bench/import_speed.py (timings on a shared machine: compare within a run)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
