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
    import uvicorn

    from app.server import LimitedHttpToolsProtocol
    from movierec.settings import get_settings

    settings = get_settings()
    uvicorn.run(
        "app.main:create_app", factory=True, host=host, port=port, workers=workers,
        log_level=settings.log_level.lower(), access_log=access_log, http=LimitedHttpToolsProtocol,
    )
