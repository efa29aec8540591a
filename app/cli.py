"""``movierec serve``: run the API with uvicorn. Cheap to import (uvicorn is imported on use)."""

from __future__ import annotations

from typing import Annotated

import typer


def serve(
    host: Annotated[str, typer.Option(help="Interface to bind (0.0.0.0 to listen on all).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes (each loads the model).")] = 1,
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = True,
) -> None:
    """Serve the HTTP API (configured by MOVIEREC_* environment variables)."""
    import os

    # Requests already run in parallel on the thread pool; a multi-threaded BLAS inside each one
    # oversubscribes the cores (bench/serving: /recommend on 60k movies, p99 35-41 ms -> 6-8 ms
    # with one BLAS thread). Must be set before numpy loads; an explicit setting wins.
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")
    import uvicorn

    from app.server import LimitedHttpToolsProtocol
    from movierec.settings import get_settings

    settings = get_settings()
    # Slow clients: header and body read timeouts are enforced by the protocol class (uvicorn has
    # none); idle keep-alive connections and the concurrency limit are uvicorn's own settings.
    uvicorn.run(
        "app.main:create_app", factory=True, host=host, port=port, workers=workers,
        log_level=settings.log_level.lower(), access_log=access_log, http=LimitedHttpToolsProtocol,
        timeout_keep_alive=settings.keep_alive_timeout, limit_concurrency=settings.limit_concurrency,
    )
