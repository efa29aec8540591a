"""The ``movierec`` command: one entry point for the database, data, trainer, models and the API.

Expected failures (bad files, unreachable database or network, empty store) print one clear line
to stderr and exit non-zero; tracebacks are for bugs only.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from movierec import __version__
from movierec.settings import get_settings

app = typer.Typer(help="movierec: movie recommendations from latent factors.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
db_app = typer.Typer(help="The ratings database.", no_args_is_help=True)
data_app = typer.Typer(help="MovieLens data sets.", no_args_is_help=True)
import_app = typer.Typer(help="Import movies and ratings into the database.", no_args_is_help=True)
models_app = typer.Typer(help="The model store.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(data_app, name="data")
app.add_typer(import_app, name="import")
app.add_typer(models_app, name="models")


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``message`` to stderr and return the Exit to raise."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def _safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is shown as the user gave it
        return url


@contextmanager
def database_errors(url: str) -> Iterator[None]:
    """Turn database failures into one clear line naming the (password-masked) URL."""
    try:
        yield
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise fail(f"database {_safe_url(url)}: {reason}") from None


@contextmanager
def database(url: str) -> Iterator[Engine]:
    """An engine on ``url`` for one command; database errors become one clear line."""
    from movierec.db.engine import make_engine

    with database_errors(url):
        engine = make_engine(url)
        try:
            yield engine
        finally:
            engine.dispose()


@contextmanager
def byte_progress(total: int, label: str) -> Iterator[Callable[[int], None] | None]:
    """A rich progress bar over ``total`` bytes on a terminal; nothing otherwise."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TimeRemainingColumn(), transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    logging.basicConfig(level=get_settings().log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Libraries' INFO lines (every HTTP request, alembic's plugin set-up) drown the CLI's own output.
    for noisy in ("httpx", "httpcore", "alembic.runtime.plugins"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# -- db ------------------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply the migrations to MOVIEREC_DATABASE_URL (creates an SQLite file if needed)."""
    from movierec.db.migrate import upgrade

    url = get_settings().database_url
    with database_errors(url):
        upgrade(url, revision)
    typer.echo(f"database {_safe_url(url)} is at revision {revision}")


@db_app.command("current")
def db_current() -> None:
    """Print the database's migration revision and the newest one the code knows."""
    from movierec.db.migrate import current_revision, head_revision

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


# -- data ----------------------------------------------------------------------------------------


@data_app.command("fetch")
def data_fetch(name: Annotated[str, typer.Argument(help="ml-100k, ml-latest-small, ml-1m or ml-25m.")]) -> None:
    """Download a MovieLens set into MOVIEREC_DATA_DIR/NAME, verified by checksum (idempotent)."""
    from movierec.data.fetch import DATASETS, FetchError, fetch, is_complete

    settings = get_settings()
    target = settings.data_dir / name
    if name in DATASETS and is_complete(target):
        typer.echo(f"{name} is already in {target}")
        return
    progress, bar = None, None
    if sys.stderr.isatty():
        from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

        bar = Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                       TransferSpeedColumn(), transient=True)
        task = bar.add_task(f"fetching {name}", total=None)

        def progress(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        bar.start()
    try:
        path = fetch(name, settings.data_dir, index_url=settings.pypi_index_url, progress=progress)
    except FetchError as exc:
        raise fail(str(exc)) from None
    finally:
        if bar is not None:
            bar.stop()
    typer.echo(f"{name} is in {path}")


@data_app.command("list")
def data_list() -> None:
    """List the MovieLens sets movierec knows and which are already fetched."""
    from movierec.data.fetch import DATASETS, is_complete

    data_dir = get_settings().data_dir
    for name, dataset in DATASETS.items():
        state = "fetched" if is_complete(data_dir / name) else "not fetched"
        typer.echo(f"{name:16} {state:12} {dataset.url}")


# -- import --------------------------------------------------------------------------------------


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
        with database(url) as engine, byte_progress(size, f"importing {ratings_file.name}") as hook:
            run = import_movielens if kind == "movielens" else import_ratings
            result = run(engine, path, on_bytes=hook)
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


# -- models --------------------------------------------------------------------------------------


@models_app.command("list")
def models_list(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List model versions with their metrics; the current one is marked with *."""
    from movierec.store import ModelStore

    rows = ModelStore(get_settings().model_store).list()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no models yet; run `movierec train`")
        return
    for row in rows:
        metrics = row.get("metrics") or {}
        shown = "  ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()) if isinstance(v, int | float))
        mark = "*" if row["current"] else " "
        typer.echo(f"{mark} {row['version']:>4}  {row.get('kind', '?'):4} k={row.get('factors', '?'):<4} "
                   f"{row.get('created_at', '')}  {row.get('error', shown)}")


@models_app.command("current")
def models_current() -> None:
    """Print the version the API serves; exit 1 when the store has none."""
    from movierec.store import ModelStore

    version = ModelStore(get_settings().model_store).current_version()
    if version is None:
        raise fail("no model in the store; run `movierec train`")
    typer.echo(version)


@models_app.command("rollback")
def models_rollback() -> None:
    """Make the version before the current one current (the API picks it up by itself)."""
    from movierec.store import ModelStore, StoreError

    try:
        version = ModelStore(get_settings().model_store).rollback()
    except StoreError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"version {version} is current")


@models_app.command("use")
def models_use(version: Annotated[int, typer.Argument(help="Version to serve.")]) -> None:
    """Make a given version current after checking that it loads."""
    from movierec.store import ModelStore, StoreError

    try:
        ModelStore(get_settings().model_store).set_current(version)
    except StoreError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"version {version} is current")


def _register_programs() -> None:
    # The trainer and the API each own their command; both modules are cheap to import
    # (torch and uvicorn are imported inside the commands).
    from app.cli import serve
    from trainer.cli import train

    app.command("train")(train)
    app.command("serve")(serve)


def main() -> None:
    """Console-script entry point."""
    _register_programs()
    app()
