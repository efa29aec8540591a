"""``movierec serve``: run the API with uvicorn. Cheap to import (uvicorn is imported on use)."""

from __future__ import annotations

from typing import Annotated

import typer


#: Most workers picked by default: past this, more processes mostly add memory and connections.
MAX_DEFAULT_WORKERS = 8
#: Most workers picked by default with PostgreSQL: each worker's pool may open 40 connections
#: (app.main: the thread pool's 40 threads), and PostgreSQL allows 100 by default.
MAX_DEFAULT_WORKERS_POSTGRES = 2


def usable_cpus() -> int:
    """CPU cores this process may run on: its affinity mask, bounded by a cgroup v2 CPU quota (containers)."""
    import math
    import os
    from pathlib import Path

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def default_workers(database_url: str, cpus: int | None = None) -> int:
    """The worker count ``movierec serve`` picks when none is given (the rule in docs/configuration.md).

    One per usable core: requests are CPU work (numpy, JSON) under one GIL per process, and the
    workers share the model's pages, so a worker costs its own interpreter and catalogue only.
    """
    count = min(cpus if cpus is not None else usable_cpus(), MAX_DEFAULT_WORKERS)
    if database_url.startswith("postgresql"):
        count = min(count, MAX_DEFAULT_WORKERS_POSTGRES)
    return max(1, count)


def fork_workers_from_here() -> bool:
    """Make uvicorn fork its worker processes from this one, after importing the app here.

    uvicorn spawns each worker as a fresh interpreter, which imports the app again: ~65 MiB of
    private memory per worker (the interpreter's heap: numpy, SQLAlchemy, FastAPI, faiss, the
    app's modules), most of what a worker held privately once the model and its ANN index were
    shared maps. Forked from a supervisor that has imported them, the workers share those pages
    until they write to them; ``gc.freeze()`` first keeps the collector from writing to every
    inherited object (its header) and so copying their pages. docs/benchmarks.md#worker-memory
    has the measurement.

    Safe because the supervisor has started no thread and no OpenMP or BLAS pool when it forks:
    only imports run here (no model, no database connection), and BLAS is limited to one thread
    before numpy loads (:func:`serve`). A forked worker gets the default handlers for the signals
    the supervisor queues for itself (a spawned one starts with them); uvicorn installs its own
    SIGINT/SIGTERM handlers in the worker. Returns False, leaving uvicorn to spawn, where this
    platform or uvicorn version does not allow it (no ``fork`` start method, or uvicorn's
    ``_subprocess.spawn`` context is gone).
    """
    import multiprocessing
    import os
    import signal

    from uvicorn import _subprocess
    from uvicorn.supervisors import multiprocess

    if "fork" not in multiprocessing.get_all_start_methods() or not hasattr(_subprocess, "spawn"):
        return False
    freeze_imports()  # imported once, here, for every worker to share; frozen so they keep sharing it

    queued = tuple(getattr(multiprocess, "SIGNALS", {}))

    def default_signals() -> None:
        for sig in queued:
            signal.signal(sig, signal.SIG_DFL)

    os.register_at_fork(after_in_child=default_signals)
    _subprocess.spawn = multiprocessing.get_context("fork")  # type: ignore[attr-defined]
    return True


def freeze_imports() -> None:
    """Import the app and move everything allocated so far out of the cyclic collector's sight.

    The imports (~65 MiB of objects: numpy, SQLAlchemy, FastAPI, pydantic, faiss, the app) live as
    long as the process; left to the collector, each full collection walks all of them, inside
    whichever request triggered it. That was the tail of /recommend's latency: one worker, 60k
    movies, 16 connections, p99 43-45 ms against 20-23 ms with this (p50 and p90 unchanged; two
    alternated rounds, docs/benchmarks.md). Done before the app starts, so the model and anything
    replaced later stay collectable. Forked workers get the same from :func:`fork_workers_from_here`.
    """
    import gc

    import app.main  # noqa: F401 - what uvicorn imports next, imported now to be frozen

    gc.collect()
    gc.freeze()


def serve(
    host: Annotated[str, typer.Option(help="Interface to bind (0.0.0.0 to listen on all).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
    workers: Annotated[int | None, typer.Option(
        min=1, show_default=False,
        help="Worker processes. Default: MOVIEREC_WORKERS, or when that is 0 (its default) one per usable CPU "
             "core, at most 8, and at most 2 with PostgreSQL (each worker may hold 40 database connections; "
             "PostgreSQL allows 100 by default). The workers share the model (a read-only memory map).")] = None,
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = True,
) -> None:
    """Serve the HTTP API (configured by MOVIEREC_* environment variables)."""
    import os

    # Requests already run in parallel on the thread pool; a multi-threaded BLAS inside each one
    # oversubscribes the cores (bench/serving: /recommend on 60k movies, p99 35-41 ms -> 6-8 ms
    # with one BLAS thread). Must be set before numpy loads; an explicit setting wins.
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")
    from app.memory import limit_malloc_arenas

    limit_malloc_arenas()  # before any thread: fewer private malloc arenas per worker
    import uvicorn

    from app.server import LimitedHttpToolsProtocol
    from movierec.settings import get_settings

    settings = get_settings()
    workers = workers or settings.workers or default_workers(settings.database_url)
    if workers > 1:
        fork_workers_from_here()
    else:
        freeze_imports()
    # Slow clients: header and body read timeouts are enforced by the protocol class (uvicorn has
    # none); idle keep-alive connections and the concurrency limit are uvicorn's own settings.
    uvicorn.run(
        "app.main:create_app", factory=True, host=host, port=port, workers=workers,
        log_level=settings.log_level.lower(), access_log=access_log, http=LimitedHttpToolsProtocol,
        timeout_keep_alive=settings.keep_alive_timeout, limit_concurrency=settings.limit_concurrency,
    )
