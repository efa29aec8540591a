"""``movierec db``: the ratings database's migrations and counts."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from movierec.settings import get_settings

from .errors import database, database_errors, safe_url

db_app = typer.Typer(help="The ratings database.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply the migrations to MOVIEREC_DATABASE_URL (creates an SQLite file if needed)."""
    from migrations import upgrade

    url = get_settings().database_url
    with database_errors(url):
        upgrade(url, revision)
    typer.echo(f"database {safe_url(url)} is at revision {revision}")


@db_app.command("current")
def db_current() -> None:
    """Print the database's migration revision and the newest one the code knows."""
    from migrations import head_revision
    from movierec.db.migrate import current_revision

    with database(get_settings().database_url) as engine:
        current = current_revision(engine)
    head = head_revision()
    typer.echo(f"current: {current or '(empty database)'}  head: {head}")
    if current != head:
        raise typer.Exit(1)


@db_app.command("stats")
def db_stats() -> None:
    """Print how many movies, ratings and users the database holds (JSON)."""
    from sqlalchemy import distinct, func, select

    from movierec.db.schema import Movie, Rating

    with database(get_settings().database_url) as engine, engine.connect() as conn:
        movies = conn.execute(select(func.count()).select_from(Movie)).scalar_one()
        ratings = conn.execute(select(func.count()).select_from(Rating)).scalar_one()
        users = conn.execute(select(func.count(distinct(Rating.user_id)))).scalar_one()
    typer.echo(json.dumps({"movies": movies, "ratings": ratings, "users": users}))
