"""``movierec import``: movies and ratings from MovieLens files, in one transaction each."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from movierec.progress import Progress
from movierec.settings import get_settings

from .errors import database, fail

import_app = typer.Typer(help="Import movies and ratings into the database.", no_args_is_help=True)


def _run_import(kind: str, path: Path, if_empty: bool = False) -> None:
    from sqlalchemy import select

    from movierec.data.importer import import_movielens, import_ratings
    from movierec.data.movielens import DataFormatError, detect_layout
    from movierec.db.schema import Rating

    url = get_settings().database_url
    if if_empty:
        with database(url) as engine, engine.connect() as conn:
            has_ratings = conn.execute(select(Rating.user_id).limit(1)).first() is not None
        if has_ratings:
            typer.echo("the database already holds ratings; nothing imported (--if-empty)")
            return
    try:
        ratings_file = detect_layout(path).ratings if kind == "movielens" else path
        size = ratings_file.stat().st_size if ratings_file.is_file() else 0
    except DataFormatError as exc:
        raise fail(str(exc)) from None
    try:
        with database(url) as engine, Progress("bytes", transient=True) as progress:
            task = progress.track(f"importing {ratings_file.name}", total=size)
            run = import_movielens if kind == "movielens" else import_ratings
            result = run(engine, path, on_bytes=task.advance_hook)
    except (DataFormatError, UnicodeDecodeError) as exc:
        raise fail(f"{exc}; nothing was imported") from None
    typer.echo(result.summary())


@import_app.command("movielens")
def import_movielens_cmd(
    directory: Annotated[Path, typer.Argument(help="A MovieLens directory (100K, 1M or CSV layout).")],
    if_empty: Annotated[bool, typer.Option("--if-empty", help="Do nothing if the database holds ratings.")] = False,
) -> None:
    """Import movies and ratings from a MovieLens directory, in one transaction (idempotent)."""
    _run_import("movielens", directory, if_empty)


@import_app.command("ratings")
def import_ratings_cmd(
    file: Annotated[Path, typer.Argument(help="u.data, ratings.dat or ratings.csv; the movies must exist.")],
) -> None:
    """Import a ratings file alone, in one transaction (idempotent)."""
    _run_import("ratings", file)
